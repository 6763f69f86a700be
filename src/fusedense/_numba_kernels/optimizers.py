"""SGD and Adam/AdamW: one fused pass over a flat parameter buffer (equations in
``fusedense.reference``). Element-wise: the parallel variants split the buffer into blocks."""
import math

from numba import prange

from .jit import PARALLEL_MIN_ELEMENTS as BLOCK
from .jit import kernel, parallel_kernel


@kernel
def _sgd_range(params, grads, velocity, lr, momentum, nesterov, weight_decay, start, stop):
    real = params.dtype.type  # arithmetic in the buffer's dtype, as NumPy does with float scalars
    lr, momentum, weight_decay = real(lr), real(momentum), real(weight_decay)
    for i in range(start, stop):
        g = grads[i] + weight_decay * params[i]
        if momentum == 0.0:
            params[i] -= lr * g
        else:
            v = momentum * velocity[i] + g
            velocity[i] = v
            params[i] -= lr * (g + momentum * v if nesterov else v)


@kernel
def sgd_step(params, grads, velocity, lr, momentum, nesterov, weight_decay):
    """PyTorch's SGD: g += wd·p; v = μ v + g; p −= lr · (g + μ v if nesterov else v)."""
    _sgd_range(params, grads, velocity, lr, momentum, nesterov, weight_decay, 0, params.size)


@parallel_kernel
def sgd_step_parallel(params, grads, velocity, lr, momentum, nesterov, weight_decay):
    """sgd_step in parallel blocks of the buffer."""
    n = params.size
    for block in prange((n + BLOCK - 1) // BLOCK):
        _sgd_range(params, grads, velocity, lr, momentum, nesterov, weight_decay,
                   block * BLOCK, min(n, (block + 1) * BLOCK))


@kernel
def _adam_range(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, decoupled,
                m_scale, v_scale, start, stop):
    # arithmetic in the buffer's dtype (as NumPy does with float scalars): float32 square roots
    # and divisions take half the time of float64 ones per element, and this loop is bound by them
    real = params.dtype.type
    lr, eps, weight_decay, m_scale, v_scale = real(lr), real(eps), real(weight_decay), real(m_scale), real(v_scale)
    beta1, beta2, keep1, keep2 = real(beta1), real(beta2), real(1.0 - beta1), real(1.0 - beta2)
    for i in range(start, stop):
        p = params[i]
        if decoupled:
            p -= lr * weight_decay * p
            g = grads[i]
        else:
            g = grads[i] + weight_decay * p
        m_i = beta1 * m[i] + keep1 * g
        v_i = beta2 * v[i] + keep2 * g * g
        m[i] = m_i
        v[i] = v_i
        params[i] = p - lr * (m_i * m_scale) / (math.sqrt(v_i * v_scale) + eps)


@kernel
def adam_step(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """Adam (L2 added to the gradient) or AdamW (decoupled=True: p −= lr·wd·p first);
    m̂ = m / (1 − β1^step), v̂ = v / (1 − β2^step), p −= lr · m̂ / (√v̂ + ε)."""
    _adam_range(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, decoupled,
                1.0 / (1.0 - beta1 ** step), 1.0 / (1.0 - beta2 ** step), 0, params.size)


@parallel_kernel
def adam_step_parallel(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """adam_step in parallel blocks of the buffer."""
    m_scale, v_scale = 1.0 / (1.0 - beta1 ** step), 1.0 / (1.0 - beta2 ** step)
    n = params.size
    for block in prange((n + BLOCK - 1) // BLOCK):
        _adam_range(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, decoupled,
                    m_scale, v_scale, block * BLOCK, min(n, (block + 1) * BLOCK))
