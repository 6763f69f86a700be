# One layer of the flat parameter buffer, as the network kernels read it: the fields of
# fusedense.layout.LAYER in the same order (5 x 8 bytes, no padding), so a record array is
# read in place as `const Layer[::1]`.
from libc.stdint cimport int64_t


ctypedef struct Layer:
    int64_t offset  # W (fan_in x fan_out, C order) starts at params[offset], its bias follows
    int64_t fan_in
    int64_t fan_out
    int64_t activation
    double alpha


cdef inline Py_ssize_t bias_offset(const Layer* layer) noexcept nogil:
    """Where the layer's bias starts in params (right after W)."""
    return layer.offset + layer.fan_in * layer.fan_out


cdef inline Py_ssize_t widest(const Layer* layers, Py_ssize_t L) noexcept nogil:
    """The largest fan_out: rows of scratch hold any layer's output."""
    cdef Py_ssize_t l, width = 0
    for l in range(L):
        width = max(width, layers[l].fan_out)
    return width
