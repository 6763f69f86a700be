# Activations on one row of a batch: the compiled twin of src/fusedense/activations.py.
# One switch on the activation id per row, then a plain loop per activation so that the cheap
# ones (identity, relu, leaky_relu) vectorize, and so do those built on exp_nonpos/expm1_nonpos
# (sigmoid, silu, tanh, elu, gelu, softmax); gelu_erf and softplus still call libm (erf, log1p).
# Stable forms are the registry's: exp() only of non-positive numbers, expm1/log1p near zero.
# No fast-math anywhere: NaN propagates. Literals in float code are cast to <real>: Cython
# writes a bare 2 as the C double 2.0, which turns the float loops into double arithmetic.
from libc.math cimport copysign, copysignf, erf, erff, log, logf, log1p, log1pf, sqrt, sqrtf
from libc.string cimport memcpy

from abi cimport *
from real cimport real

cdef extern from "fastexp.h" nogil:
    float fd_exp_nonpos_f(float x)
    double fd_exp_nonpos_d(double x)
    float fd_expm1_nonpos_f(float x)
    double fd_expm1_nonpos_d(double x)

cdef extern from *:
    # the registry's constants, in double; float kernels round them once
    const double SQRT_2_OVER_PI "0.79788456080286535588"
    const double GELU_C "0.044715"
    const double INV_SQRT_2 "0.70710678118654752440"
    const double INV_SQRT_2PI "0.39894228040143267794"


# --- libm in the kernel's own precision --------------------------------------------------

cdef inline real r_log(real x) noexcept nogil:
    return logf(x) if real is float else log(x)

cdef inline real r_log1p(real x) noexcept nogil:
    return log1pf(x) if real is float else log1p(x)

cdef inline real r_erf(real x) noexcept nogil:
    return erff(x) if real is float else erf(x)

cdef inline real r_sqrt(real x) noexcept nogil:
    return sqrtf(x) if real is float else sqrt(x)

cdef inline real exp_nonpos(real x) noexcept nogil:
    """e^x for x <= 0 (fastexp.h): as accurate as libm, and loops calling it vectorize."""
    return fd_exp_nonpos_f(x) if real is float else fd_exp_nonpos_d(x)

cdef inline real expm1_nonpos(real x) noexcept nogil:
    """e^x − 1 for x <= 0 (fastexp.h): full relative precision near 0, and loops vectorize."""
    return fd_expm1_nonpos_f(x) if real is float else fd_expm1_nonpos_d(x)

cdef inline real r_copysign(real x, real sign) noexcept nogil:
    return copysignf(x, sign) if real is float else copysign(x, sign)


# --- element-wise forms ------------------------------------------------------------------

cdef inline real relu(real z) noexcept nogil:
    return 0 if z <= 0 else z  # NaN > 0 is false, NaN <= 0 too: NaN passes through

cdef inline real sigmoid(real z) noexcept nogil:
    cdef real one = 1, e = exp_nonpos(-z if z >= 0 else z)
    return one / (one + e) if z >= 0 else e / (one + e)

cdef inline real tanh_(real z) noexcept nogil:
    """tanh(z) = sign(z) · −m/(2 + m), m = e^(−2|z|) − 1: no cancellation near 0 (m ≈ −2|z|),
    ±inf → ±1 (m flushes to −1), NaN → NaN, −0.0 → −0.0. Trailing _: libm's name is taken."""
    cdef real m = expm1_nonpos(<real>-2 * (-z if z < 0 else z))
    return r_copysign(-m / (<real>2 + m), z)

cdef inline real elu(real z, real alpha) noexcept nogil:
    # expm1 of min(z, 0) (so a NaN z stays NaN) computed unconditionally, then a select: a call
    # inside the branch would keep GCC from vectorizing the loop
    cdef real m = expm1_nonpos(0 if z > 0 else z)
    return z if z > 0 else alpha * m

cdef inline real gelu(real z) noexcept nogil:
    cdef real inner = <real>SQRT_2_OVER_PI * (z + <real>GELU_C * z * z * z)
    return <real>0.5 * z * (1 + tanh_(inner))

cdef inline real d_gelu(real z) noexcept nogil:
    cdef real t = tanh_(<real>SQRT_2_OVER_PI * (z + <real>GELU_C * z * z * z))
    return (<real>0.5 * (1 + t) + <real>0.5 * z * (1 - t * t) * <real>SQRT_2_OVER_PI
            * (1 + 3 * <real>GELU_C * z * z))

cdef inline real gelu_erf(real z) noexcept nogil:
    return <real>0.5 * z * (1 + r_erf(z * <real>INV_SQRT_2))

cdef inline real d_gelu_erf(real z) noexcept nogil:
    return (<real>0.5 * (1 + r_erf(z * <real>INV_SQRT_2))
            + z * <real>INV_SQRT_2PI * exp_nonpos(<real>-0.5 * z * z))

cdef inline real softplus(real z) noexcept nogil:
    return relu(z) + r_log1p(exp_nonpos(-z if z >= 0 else z))


# --- one row ----------------------------------------------------------------------------

cdef inline void softmax_row(const real* z, real* y, Py_ssize_t n, bint log_output) noexcept nogil:
    """y = softmax(z) or log_softmax(z) over n entries (y may be z)."""
    cdef Py_ssize_t j
    cdef real top = z[0]
    cdef real total = 0
    for j in range(1, n):
        if z[j] > top:
            top = z[j]
    if log_output:
        for j in range(n):
            total += exp_nonpos(z[j] - top)
        total = r_log(total)
        for j in range(n):
            y[j] = z[j] - top - total
    else:  # separate loops: the exp loop vectorizes, the in-order sum cannot
        for j in range(n):
            y[j] = exp_nonpos(z[j] - top)
        for j in range(n):
            total += y[j]
        for j in range(n):
            y[j] = y[j] / total


cdef inline void act_forward_row(int act, real alpha, const real* z, real* y,
                                 Py_ssize_t n) noexcept nogil:
    """y = act(z) over one row of n entries; y may be z (in place)."""
    cdef Py_ssize_t j
    if act == ACT_IDENTITY:
        if y != z:
            memcpy(y, z, n * sizeof(real))
    elif act == ACT_RELU:
        for j in range(n):
            y[j] = relu(z[j])
    elif act == ACT_LEAKY_RELU:
        for j in range(n):
            y[j] = z[j] if z[j] > 0 else alpha * z[j]
    elif act == ACT_ELU:
        for j in range(n):
            y[j] = elu(z[j], alpha)
    elif act == ACT_SIGMOID:
        for j in range(n):
            y[j] = sigmoid(z[j])
    elif act == ACT_TANH:
        for j in range(n):
            y[j] = tanh_(z[j])
    elif act == ACT_GELU:
        for j in range(n):
            y[j] = gelu(z[j])
    elif act == ACT_GELU_ERF:
        for j in range(n):
            y[j] = gelu_erf(z[j])
    elif act == ACT_SILU:
        for j in range(n):
            y[j] = z[j] * sigmoid(z[j])
    elif act == ACT_SOFTPLUS:
        for j in range(n):
            y[j] = softplus(z[j])
    elif act == ACT_SOFTMAX:
        softmax_row(z, y, n, False)
    elif act == ACT_LOG_SOFTMAX:
        softmax_row(z, y, n, True)


cdef inline void act_backward_row(int act, real alpha, const real* dy, const real* z,
                                  const real* y, real* dz, Py_ssize_t n) noexcept nogil:
    """dz = dy · ∂y/∂z over one row. Uses y (which may be NULL) where the registry's
    from_output allows, else z. dz may be dy (in place) except for softmax/log_softmax
    without y, which use dz as scratch for y; dz is never z or y."""
    cdef Py_ssize_t j
    cdef real s, t
    cdef const real* src = y if y != NULL else z  # the from_output activations read either
    if act == ACT_IDENTITY:
        if dz != dy:
            memcpy(dz, dy, n * sizeof(real))
    elif act == ACT_RELU:
        for j in range(n):
            dz[j] = dy[j] * (1 if src[j] > 0 else 0)
    elif act == ACT_LEAKY_RELU:
        for j in range(n):
            dz[j] = dy[j] * (1 if src[j] > 0 else alpha)
    elif act == ACT_ELU:  # below zero: d/dz alpha (e^z - 1) = y + alpha
        for j in range(n):
            s = y[j] if y != NULL else elu(z[j], alpha)
            dz[j] = dy[j] * (1 if s > 0 else s + alpha)
    elif act == ACT_SIGMOID:
        for j in range(n):
            s = y[j] if y != NULL else sigmoid(z[j])
            dz[j] = dy[j] * (s * (<real>1 - s))
    elif act == ACT_TANH:
        for j in range(n):
            s = y[j] if y != NULL else tanh_(z[j])
            dz[j] = dy[j] * (<real>1 - s * s)
    elif act == ACT_GELU:
        for j in range(n):
            dz[j] = dy[j] * d_gelu(z[j])
    elif act == ACT_GELU_ERF:
        for j in range(n):
            dz[j] = dy[j] * d_gelu_erf(z[j])
    elif act == ACT_SILU:
        for j in range(n):
            s = sigmoid(z[j])
            dz[j] = dy[j] * (s * (1 + z[j] * (1 - s)))
    elif act == ACT_SOFTPLUS:
        for j in range(n):
            dz[j] = dy[j] * sigmoid(z[j])
    elif act == ACT_SOFTMAX:  # dz = y · (dy − Σ dy·y)
        t = 0
        if y == NULL:
            softmax_row(z, dz, n, False)  # dz holds y until it is overwritten below
            y = dz
        for j in range(n):
            t += dy[j] * y[j]
        for j in range(n):
            dz[j] = y[j] * (dy[j] - t)
    elif act == ACT_LOG_SOFTMAX:  # dz = dy − e^y · Σ dy
        t = 0
        for j in range(n):
            t += dy[j]
        if y == NULL:
            softmax_row(z, dz, n, True)
            y = dz
        for j in range(n):
            dz[j] = dy[j] - exp_nonpos(y[j]) * t


cdef inline bint needs_z(int act) noexcept nogil:
    """True when the derivative cannot be computed from y alone (the registry's from_output)."""
    return act == ACT_GELU or act == ACT_GELU_ERF or act == ACT_SILU or act == ACT_SOFTPLUS
