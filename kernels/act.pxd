# Activations on one row of a batch: the compiled twin of src/fusedense/activations.py lives in
# act_rows.h / act_rows_body.h (one C body, compiled per ISA: AVX-512, AVX2 + FMA, SSE2, picked at
# run time). This file gives Cython fused-type names to its entry points, plus the few scalar
# forms the loss rows need (the body's generic build, so each formula has one place).
from libc.math cimport log, logf, log1p, log1pf

from abi cimport *
from real cimport real

cdef extern from "fastexp.h" nogil:
    float fd_exp_nonpos_f(float x)
    double fd_exp_nonpos_d(double x)

cdef extern from "act_rows.h" nogil:
    void act_forward_row_f(int act, float alpha, const float* z, const float* bias, float* y,
                           Py_ssize_t n)
    void act_forward_row_d(int act, double alpha, const double* z, const double* bias, double* y,
                           Py_ssize_t n)
    void act_backward_row_f(int act, float alpha, const float* dy, const float* z,
                            const float* y, float* dz, Py_ssize_t n)
    void act_backward_row_d(int act, double alpha, const double* dy, const double* z,
                            const double* y, double* dz, Py_ssize_t n)
    void exp_shifted_row_f(const float* z, float top, float* e, Py_ssize_t n)
    void exp_shifted_row_d(const double* z, double top, double* e, Py_ssize_t n)
    float relu_f "relu_f_generic"(float z)
    double relu_d "relu_d_generic"(double z)
    float sigmoid_f "sigmoid_f_generic"(float z)
    double sigmoid_d "sigmoid_d_generic"(double z)


# --- libm and scalar forms in the kernel's own precision ---------------------------------

cdef inline real r_log(real x) noexcept nogil:
    return logf(x) if real is float else log(x)

cdef inline real r_log1p(real x) noexcept nogil:
    return log1pf(x) if real is float else log1p(x)

cdef inline real exp_nonpos(real x) noexcept nogil:
    """e^x for x <= 0 (fastexp.h): as accurate as libm, and loops calling it vectorize."""
    return fd_exp_nonpos_f(x) if real is float else fd_exp_nonpos_d(x)

cdef inline real relu(real z) noexcept nogil:
    return relu_f(z) if real is float else relu_d(z)

cdef inline real sigmoid(real z) noexcept nogil:
    return sigmoid_f(z) if real is float else sigmoid_d(z)


# --- rows ---------------------------------------------------------------------------------

cdef inline void act_forward_row(int act, real alpha, const real* z, real* y,
                                 Py_ssize_t n) noexcept nogil:
    """y = act(z) over one row of n entries; y may be z (in place)."""
    bias_act_forward_row(act, alpha, z, NULL, y, n)


cdef inline void bias_act_forward_row(int act, real alpha, const real* z, const real* bias,
                                      real* y, Py_ssize_t n) noexcept nogil:
    """y = act(z + bias) over one row in one pass; bias may be NULL, y may be z."""
    if real is float:
        act_forward_row_f(act, alpha, z, bias, y, n)
    else:
        act_forward_row_d(act, alpha, z, bias, y, n)


cdef inline void act_backward_row(int act, real alpha, const real* dy, const real* z,
                                  const real* y, real* dz, Py_ssize_t n) noexcept nogil:
    """dz = dy · ∂y/∂z over one row. Uses y (which may be NULL) where the registry's
    from_output allows, else z. dz may be dy (in place) except for softmax/log_softmax
    without y, which use dz as scratch for y; dz is never z or y."""
    if real is float:
        act_backward_row_f(act, alpha, dy, z, y, dz, n)
    else:
        act_backward_row_d(act, alpha, dy, z, y, dz, n)


cdef inline void act_backward_rows(int act, real alpha, Py_ssize_t rows, Py_ssize_t n,
                                   const real* dy, const real* z, const real* y,
                                   real* dz) noexcept nogil:
    """act_backward_row over `rows` contiguous rows of n (z, y may be NULL). An element-wise
    activation takes them in one call: a call per 100-wide row of a hidden layer's gradient
    was 2.5% of a float64 digits fit (issue 19), most of it each call's setup and loop tail."""
    cdef Py_ssize_t r
    if act == ACT_SOFTMAX or act == ACT_LOG_SOFTMAX:  # row-wise: each row's own sum
        for r in range(rows):
            act_backward_row(act, alpha, dy + r * n, NULL if z == NULL else z + r * n,
                             NULL if y == NULL else y + r * n, dz + r * n, n)
    else:
        act_backward_row(act, alpha, dy, z, y, dz, rows * n)


cdef inline void exp_shifted_row(const real* z, real top, real* e, Py_ssize_t n) noexcept nogil:
    """e[j] = e^(z[j] − top) for top >= every z[j]; e may be z."""
    if real is float:
        exp_shifted_row_f(z, top, e, n)
    else:
        exp_shifted_row_d(z, top, e, n)


cdef inline bint needs_z(int act) noexcept nogil:
    """True when the derivative cannot be computed from y alone (the registry's from_output)."""
    return act == ACT_GELU or act == ACT_GELU_ERF or act == ACT_SILU or act == ACT_SOFTPLUS


cdef inline int check_act(int act) except -1:
    """act is an id of the registry (checked before any nogil section uses it)."""
    if not 0 <= act < N_ACTIVATIONS:
        raise ValueError(f"act_id: unknown activation id {act}")
    return 0
