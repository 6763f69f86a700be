# Dropout masks drawn inside the training step: fusedense.reference.dropout_keep's counter-based
# generator, SplitMix64 over (seed, step, layer, row, column), in the same wrapping 64-bit
# integers, so the Cython kernels keep exactly the elements the oracle and the numba engine keep.
# A pure function of its counters: any thread can mask any rows, the mask never depends on
# which thread or in which order.
from libc.stdint cimport int64_t, uint64_t

from layer cimport Layer
from real cimport real

# The constants (reference.GOLDEN, MIX1, MIX2) are written where they are used: a .pxd can
# declare but not initialise a module variable.
cdef inline uint64_t golden() noexcept nogil:
    return 0x9E3779B97F4A7C15ULL


ctypedef struct Dropout:
    uint64_t key        # the stream of this layer and step (0 with threshold 0: nothing dropped)
    uint64_t threshold  # drop when the element's 16 bits of u < threshold = floor(rate · 2^16); 0: none
    double scale        # 1 / (1 − rate), rounded to the kernel's type where it is applied


cdef inline uint64_t mix64(uint64_t z) noexcept nogil:
    """SplitMix64's finalizer."""
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline Dropout layer_dropout(const Layer* layer, Py_ssize_t index, uint64_t step) noexcept nogil:
    """The mask of ``layer`` (record entry ``index``) at training step ``step``; step 0 (no
    training step: mlp_gradient) or rate 0 give threshold 0, which the callers skip."""
    cdef Dropout d
    d.key, d.threshold, d.scale = 0, 0, 1.0
    if step == 0 or not layer.dropout > 0:
        return d
    d.key = mix64(mix64(mix64(<uint64_t>layer.seed ^ golden()) ^ step) ^ <uint64_t>index)
    d.threshold = <uint64_t>(layer.dropout * 65536.0)  # exact, truncated: floor(rate · 2^16)
    d.scale = 1.0 / (1.0 - layer.dropout)
    return d


cdef inline void dropout_rows(const Dropout* d, Py_ssize_t r0, Py_ssize_t rows, Py_ssize_t n,
                              const real* src, real* dst) noexcept nogil:
    """dst = src · mask · scale for rows [r0, r0 + rows) of an (·, n) input (src and dst point at
    row r0; they may be the same rows: the backward masks dx in place). One hash gives four
    elements their 16-bit uniforms; a select, not a branch (the mask is random: a branch on it
    mispredicts)."""
    cdef Py_ssize_t j, count = rows * n
    cdef real factor[2]  # [dropped, kept]: indexed by the comparison (GCC turns a conditional, or
    factor[0], factor[1] = 0, <real>d.scale  # even the comparison times the scale, into a branch)
    cdef uint64_t i, u = 0, g = golden(), first = <uint64_t>r0 * <uint64_t>n
    for j in range(count):
        i = first + <uint64_t>j
        if j == 0 or (i & 3) == 0:
            u = mix64(d.key + ((i >> 2) + 1) * g)
        dst[j] = src[j] * factor[((u >> (16 * (i & 3))) & 0xFFFF) >= d.threshold]
