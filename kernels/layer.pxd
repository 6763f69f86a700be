# One layer of the flat parameter buffer, as the network kernels read it: the fields of
# fusedense.layout.LAYER in the same order (9 x 8 bytes, no padding), so a record array is
# read in place.
cimport numpy as cnp
from libc.stdint cimport int64_t


ctypedef struct Layer:
    int64_t offset  # W (fan_in x fan_out, C order) starts at params[offset], its bias follows
    int64_t fan_in
    int64_t fan_out
    int64_t activation
    double alpha
    double l1  # kernel penalty l1·Σ|W| + l2·ΣW² (times the step's hyper[H_PENALTY_SCALE]): train.pxd
    double l2
    double dropout  # the rate at which a training step drops this layer's input (dropout.pxd)
    int64_t seed    # the seed of that mask, in [0, 2^63)


cdef inline Py_ssize_t bias_offset(const Layer* layer) noexcept nogil:
    """Where the layer's bias starts in params (right after W)."""
    return layer.offset + layer.fan_in * layer.fan_out


cdef inline Py_ssize_t widest(const Layer* layers, Py_ssize_t L) noexcept nogil:
    """The largest fan_out: rows of scratch hold any layer's output."""
    cdef Py_ssize_t l, width = 0
    for l in range(L):
        width = max(width, layers[l].fan_out)
    return width


cdef inline const Layer* records(object layers, Py_ssize_t* L) noexcept:
    """The structs of a LAYER record array, read in place (the gate hands engines only
    those). Not a typed memoryview (const Layer[::1]): acquiring one costs a tenth of a
    batch-1 MLP forward."""
    L[0] = cnp.PyArray_DIMS(<cnp.ndarray>layers)[0]
    return <const Layer*>cnp.PyArray_DATA(<cnp.ndarray>layers)
