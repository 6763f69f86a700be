"""The registry's activations, dispatched on their integer ids (``fusedense.activations``).

Scalar forms follow the registry's stable NumPy forms (exp only of non-positive numbers, expm1
and log1p near 0), so results agree with the reference and NaN propagates the same way.
Element-wise activations run one row at a time: the switch on the id sits outside the loop over
the row, so cheap activations (identity, relu, leaky_relu) get their own loops that LLVM
vectorises; the transcendental ones share one loop around :func:`forward_scalar`.
"""
import math

import numpy as np
from numba import prange, types
from numba.extending import overload

from ..activations import get_activation
from .fastexp import exp_nonpos, expm1_nonpos, expm1_nonpos_f32
from .jit import inline_kernel, kernel, parallel_kernel, rows_per_block

IDENTITY = get_activation("identity").id
RELU = get_activation("relu").id
LEAKY_RELU = get_activation("leaky_relu").id
ELU = get_activation("elu").id
SIGMOID = get_activation("sigmoid").id
TANH = get_activation("tanh").id
GELU = get_activation("gelu").id
GELU_ERF = get_activation("gelu_erf").id
SILU = get_activation("silu").id
SOFTPLUS = get_activation("softplus").id
SOFTMAX = get_activation("softmax").id
LOG_SOFTMAX = get_activation("log_softmax").id

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

@inline_kernel
def tanh(z):
    """tanh(z) = sign(z) · −m/(2 + m), m = e^(−2|z|) − 1, in float64: no cancellation near 0
    (m ≈ −2|z|), ±inf → ±1 (m is −1), NaN → NaN, −0 → −0. Branch-free (fastexp), so the row
    loops around it vectorise: math.tanh is a libm call per element."""
    x = np.float64(z)
    m = expm1_nonpos(-2.0 * abs(x))
    return math.copysign(-m / (2.0 + m), x)


def tanh_of(z):
    """tanh(z) in z's precision: float32 through expm1_nonpos_f32 (twice the lanes, half the
    polynomial), else :func:`tanh` (NUMBA_DISABLE_JIT: always tanh)."""
    return tanh(z)


@overload(tanh_of, jit_options={"fastmath": {"contract"}})
def _tanh_of(z):
    if z == types.float32:
        def tanh_f32(z):
            m = expm1_nonpos_f32(_MINUS_TWO_F * abs(z))
            return np.copysign(-m / (_TWO_F + m), z)
        return tanh_f32
    return lambda z: tanh(z)


_MINUS_TWO_F, _TWO_F = np.float32(-2.0), np.float32(2.0)


@inline_kernel
def gelu(z):
    """The tanh approximation of GELU, through the branch-free tanh above (vectorises)."""
    return 0.5 * z * (1.0 + tanh(_SQRT_2_OVER_PI * (z + _GELU_C * z * z * z)))


@inline_kernel
def sigmoid(z):
    """Branch-free (fastexp; both quotients are computed and one is selected): vectorises."""
    e = exp_nonpos(-abs(np.float64(z)))  # exp of a non-positive number: never overflows
    return 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)


@inline_kernel
def silu(z):
    return z * sigmoid(z)


@inline_kernel
def gelu_derivative(z):
    t = tanh(_SQRT_2_OVER_PI * (z + _GELU_C * z * z * z))
    return (0.5 * (1.0 + t)
            + 0.5 * z * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_C * z * z))


@kernel
def forward_scalar(z, act_id, alpha):
    """act(z) for an element-wise activation (NaN in, NaN out, as np.maximum & co)."""
    if act_id == IDENTITY:
        return z
    if act_id == RELU:
        return 0.0 if z <= 0 else z
    if act_id == LEAKY_RELU:
        return alpha * z if z <= 0 else z
    if act_id == ELU:
        return alpha * math.expm1(z) if z <= 0 else z
    if is_branch_free(act_id):
        return _branch_free(z, act_id)
    if act_id == GELU_ERF:
        return 0.5 * z * (1.0 + math.erf(z * _INV_SQRT_2))
    # SOFTPLUS: log(1 + e^z) = max(z, 0) + log1p(e^-|z|)
    return (0.0 if z <= 0 else z) + math.log1p(math.exp(-abs(z)))


@kernel
def derivative_scalar(z, y, act_id, alpha):
    """dy/dz for an element-wise activation, from y where the registry says y suffices
    (``from_output``), else from z. ``y`` must be act(z) for those activations."""
    if act_id == IDENTITY:
        return 1.0
    if act_id == RELU:
        return 1.0 if y > 0 else 0.0
    if act_id == LEAKY_RELU:
        return 1.0 if y > 0 else alpha  # alpha >= 0: y > 0 exactly when z > 0
    if act_id == ELU:
        return 1.0 if y > 0 else y + alpha  # d/dz alpha (e^z - 1) = alpha e^z = y + alpha
    if act_id == SIGMOID:
        return y * (1.0 - y)
    if act_id == TANH:
        return 1.0 - y * y
    if act_id == GELU:
        return gelu_derivative(z)
    if act_id == GELU_ERF:
        return 0.5 * (1.0 + math.erf(z * _INV_SQRT_2)) + z * _INV_SQRT_2PI * math.exp(-0.5 * z * z)
    if act_id == SILU:
        s = sigmoid(z)
        return s * (1.0 + z * (1.0 - s))
    return sigmoid(z)  # SOFTPLUS


# --- one row: the dense layer's epilogue and the backward's first step --------------------

@kernel
def row_max(z):
    """max(z), NaN if any element is NaN (like np.max)."""
    top = z[0]
    for j in range(1, z.size):
        if z[j] > top or z[j] != z[j]:
            top = z[j]
    return top


@kernel
def softmax_row(z, y):
    """y = softmax(z) for one row; y may be z (in place)."""
    n = z.size
    top = row_max(z)  # subtracting the max: exp never overflows
    total = 0.0
    for j in range(n):
        e = math.exp(z[j] - top)
        y[j] = e
        total += e
    scale = 1.0 / total
    for j in range(n):
        y[j] *= scale


@kernel
def log_softmax_row(z, y):
    """y = log_softmax(z) for one row; y may be z (in place)."""
    n = z.size
    top = row_max(z)
    total = 0.0
    for j in range(n):
        total += math.exp(z[j] - top)
    log_total = math.log(total)
    for j in range(n):
        y[j] = (z[j] - top) - log_total


@inline_kernel
def is_branch_free(act_id):
    """tanh, gelu, sigmoid and silu: the activations with branch-free, vectorisable forms."""
    return act_id == TANH or act_id == GELU or act_id == SIGMOID or act_id == SILU


@inline_kernel
def _branch_free(z, act_id):
    """tanh, gelu, sigmoid or else silu: act_id is a constant at every call site, so the
    if-chain folds away and the loop around this call vectorises."""
    if act_id == TANH:
        return tanh_of(z)
    if act_id == GELU:
        return gelu(z)
    if act_id == SIGMOID:
        return sigmoid(z)
    return silu(z)


@inline_kernel
def _map_row(z, act_id, y):
    """y = act(z) for a _branch_free activation (a constant at each call site), in a loop of
    its own that LLVM vectorises."""
    if y.ctypes.data == z.ctypes.data:
        # in place: one array in the loop. With two, LLVM's overlap check at run time
        # sends the vectorised loop to its scalar fallback when they coincide.
        for j in range(z.size):
            z[j] = _branch_free(z[j], act_id)
    else:
        for j in range(z.size):
            y[j] = _branch_free(z[j], act_id)


@kernel
def _branch_free_row(z, act_id, y):
    """y = act(z) for tanh, gelu, sigmoid or silu, each in its own vectorised loop (a loop
    around forward_scalar, which switches on the id per element, does not vectorise). A
    function of its own, compiled once per dtype: inlined into every caller of activation_row,
    its eight loops lengthened the cold compile (docs/performance-notes.md, "Numba engine")."""
    if act_id == TANH:
        _map_row(z, TANH, y)
    elif act_id == GELU:
        _map_row(z, GELU, y)
    elif act_id == SIGMOID:
        _map_row(z, SIGMOID, y)
    elif act_id == SILU:
        _map_row(z, SILU, y)


@inline_kernel
def activation_row(z, act_id, alpha, y):
    """y = act(z) for one row; y may be z (in place)."""
    n = z.size
    if act_id == SOFTMAX:
        softmax_row(z, y)
    elif act_id == LOG_SOFTMAX:
        log_softmax_row(z, y)
    elif act_id == IDENTITY:
        for j in range(n):
            y[j] = z[j]
    elif act_id == RELU:
        for j in range(n):
            y[j] = 0.0 if z[j] <= 0 else z[j]
    elif is_branch_free(act_id):
        _branch_free_row(z, act_id, y)  # common activations: loops of their own, vectorised
    else:
        for j in range(n):
            y[j] = forward_scalar(z[j], act_id, alpha)


@inline_kernel
def activation_vjp_row(dy, z, y, act_id, alpha, dz):
    """dz = dy · ∂y/∂z for one row. ``y`` (the output) or ``z`` (the pre-activation) may be an
    empty row when absent; activations whose derivative follows from y use y when present."""
    n = dy.size
    have_y = y.size == n
    one, zero = dz.dtype.type(1.0), dz.dtype.type(0.0)
    if act_id == SOFTMAX or act_id == LOG_SOFTMAX:
        if have_y:
            for j in range(n):
                dz[j] = y[j]
        else:
            activation_row(z, act_id, alpha, dz)  # dz holds y until overwritten below
        total = 0.0
        if act_id == SOFTMAX:  # y (dy - Σ dy·y)
            for j in range(n):
                total += dy[j] * dz[j]
            for j in range(n):
                dz[j] = dz[j] * (dy[j] - total)
        else:  # dy - e^y Σ dy
            for j in range(n):
                total += dy[j]
            for j in range(n):
                dz[j] = dy[j] - math.exp(dz[j]) * total
    elif act_id == IDENTITY:
        for j in range(n):
            dz[j] = dy[j]
    elif act_id == RELU and have_y:  # the common ones from y: loops of their own, vectorised,
        # with the constants in dz's dtype (a Python float makes a float32 loop float64: half the
        # lanes and two conversions per element, 1.7x the time of the LM's tanh backward)
        for j in range(n):
            dz[j] = dy[j] * (one if y[j] > 0 else zero)
    elif act_id == TANH and have_y:
        for j in range(n):
            dz[j] = dy[j] * (one - y[j] * y[j])
    elif act_id == SIGMOID and have_y:
        for j in range(n):
            dz[j] = dy[j] * (y[j] * (one - y[j]))
    elif act_id == GELU:  # its own loop, vectorised (as in activation_row)
        for j in range(n):
            dz[j] = dy[j] * gelu_derivative(z[j])
    elif act_id <= TANH:  # registry order: these derivatives follow from y alone
        for j in range(n):
            out = y[j] if have_y else forward_scalar(z[j], act_id, alpha)
            dz[j] = dy[j] * derivative_scalar(out, out, act_id, alpha)
    else:
        for j in range(n):
            dz[j] = dy[j] * derivative_scalar(z[j], z[j], act_id, alpha)


@kernel
def row_or_empty(a, i):
    """Row i of ``a``, or an empty row when ``a`` is absent (passed as a (0, 0) array)."""
    return a[i] if a.shape[0] > 0 else a.reshape(-1)


# --- the kernel-interface entry points: serial, and a parallel variant for large arrays -----

@kernel
def _forward_rows(z, act_id, alpha, y, start, stop):
    for i in range(start, stop):
        activation_row(z[i], act_id, alpha, y[i])


@kernel
def _backward_rows(dy, z, y, act_id, alpha, dz, start, stop):
    for i in range(start, stop):
        activation_vjp_row(dy[i], row_or_empty(z, i), row_or_empty(y, i), act_id, alpha, dz[i])


@kernel
def activation_forward(z, act_id, alpha, y):
    """y = act(z), row by row."""
    _forward_rows(z, act_id, alpha, y, 0, z.shape[0])


@parallel_kernel
def activation_forward_parallel(z, act_id, alpha, y):
    """activation_forward in parallel blocks of rows."""
    n_rows = z.shape[0]
    rows = rows_per_block(n_rows, z.shape[1])
    for block in prange((n_rows + rows - 1) // rows):
        _forward_rows(z, act_id, alpha, y, block * rows, min(n_rows, (block + 1) * rows))


@kernel
def activation_backward(dy, z, y, act_id, alpha, dz):
    """dz = dy · act'(z); ``z`` or ``y`` may be a (0, 0) array when absent."""
    _backward_rows(dy, z, y, act_id, alpha, dz, 0, dy.shape[0])


@parallel_kernel
def activation_backward_parallel(dy, z, y, act_id, alpha, dz):
    """activation_backward in parallel blocks of rows."""
    n_rows = dy.shape[0]
    rows = rows_per_block(n_rows, dy.shape[1])
    for block in prange((n_rows + rows - 1) // rows):
        _backward_rows(dy, z, y, act_id, alpha, dz, block * rows, min(n_rows, (block + 1) * rows))
