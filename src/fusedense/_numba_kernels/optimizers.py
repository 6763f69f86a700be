"""SGD, Adam/AdamW and RMSprop: one fused pass over a flat parameter buffer (equations in
``fusedense.reference``). Element-wise: the parallel variants split the buffer into blocks."""
import math

import numpy as np
from numba import prange

from .jit import PARALLEL_MIN_ELEMENTS as BLOCK
from .jit import kernel, parallel_kernel


@kernel
def _sgd_range(params, grads, velocity, lr, momentum, nesterov, weight_decay, start, stop):
    real = params.dtype.type  # arithmetic in the buffer's dtype, as NumPy does with float scalars
    lr, momentum, weight_decay = real(lr), real(momentum), real(weight_decay)
    # slices, indexed from 0: numba cannot prove range(start, stop) non-negative, and its
    # negative-index check kept these loops from vectorizing
    P, G, V = params[start:stop], grads[start:stop], velocity[start:stop]
    for i in range(P.size):
        g = G[i] + weight_decay * P[i]
        if momentum == 0.0:
            P[i] -= lr * g
        else:
            v = momentum * V[i] + g
            V[i] = v
            P[i] -= lr * (g + momentum * v if nesterov else v)


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
    """As the cython kernel (kernels/optimizers_body.h): arithmetic in the buffer's dtype, the
    corrections applied as PyTorch does (step size lr·m_scale, denominator √v·√v_scale + ε: one
    division and one square root per element), moments below the smallest normal number
    flushed to zero (denormal arithmetic is far slower; see the C kernel's comment)."""
    real = params.dtype.type
    smallest = real(np.finfo(params.dtype).tiny)
    beta1_, beta2_, keep1, keep2 = real(beta1), real(beta2), real(1.0 - beta1), real(1.0 - beta2)
    step_size, root_scale2, eps_ = real(lr * m_scale), real(math.sqrt(v_scale)), real(eps)
    l2, decay = real(weight_decay), real(lr * weight_decay)
    P, G, M, V = params[start:stop], grads[start:stop], m[start:stop], v[start:stop]  # see _sgd_range
    for i in range(P.size):
        if decoupled:
            p = P[i] - decay * P[i]
            g = G[i]
        else:
            p = P[i]
            g = G[i] + l2 * p
        m_i = beta1_ * M[i] + keep1 * g
        v_i = beta2_ * V[i] + keep2 * g * g
        m_i = real(0.0) if -smallest < m_i < smallest else m_i
        v_i = real(0.0) if v_i < smallest else v_i
        M[i] = m_i
        V[i] = v_i
        P[i] = p - step_size * (m_i / (math.sqrt(v_i) * root_scale2 + eps_))


@kernel
def rmsprop_step(params, grads, v, b, lr, rho, momentum, eps, weight_decay):
    """Keras's RMSprop, as the cython kernel (kernels/optimizers_body.h): arithmetic in the buffer's
    dtype, v and b below the smallest normal number flushed to zero."""
    real = params.dtype.type
    smallest = real(np.finfo(params.dtype).tiny)
    lr_, rho_, keep, momentum_, eps_, decay = (real(lr), real(rho), real(1.0 - rho), real(momentum), real(eps),
                                               real(lr * weight_decay))
    for i in range(params.size):
        p = params[i] - decay * params[i]
        g = grads[i]
        v_i = rho_ * v[i] + keep * g * g
        v_i = real(0.0) if v_i < smallest else v_i
        v[i] = v_i
        s = lr_ * g / math.sqrt(v_i + eps_)
        if momentum_ != 0.0:
            s = momentum_ * b[i] + s
            s = real(0.0) if -smallest < s < smallest else s
            b[i] = s
        params[i] = p - s


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
