"""NumPy as a user writes it: the baseline every fusedense benchmark is compared against.

This is deliberately ordinary code — ``np.maximum(x @ W + b, 0)``, a max-subtracted softmax,
hand-written backprop and Adam over a list of per-layer arrays — with none of fusedense's
machinery (no flat buffer, no kernel interface). Activations other than relu and identity use
the NumPy formulas of the activation registry, which are what one would type.
"""
from __future__ import annotations

import numpy as np

from ..activations import get_activation


def activation(name, alpha=None):
    """``f(z)`` for an activation name, as NumPy code."""
    if name == "relu":
        return lambda z: np.maximum(z, 0)
    if name == "identity":
        return lambda z: z
    act = get_activation(name)
    alpha = act.default_alpha if alpha is None else alpha
    return lambda z: act.forward(z, alpha)


def dense(x, W, b, act):
    """``act(x @ W + b)``; ``act`` from :func:`activation`."""
    return act(x @ W + b)


def dense_backward(dy, x, W, z, name, alpha=None):
    """``(dx, dW, db)`` of ``y = act(z)``, ``z = x @ W + b``."""
    if name == "relu":
        dz = dy * (z > 0)
    else:
        act = get_activation(name)
        dz = dy * act.derivative(z, None, act.default_alpha if alpha is None else alpha)
    return dz @ W.T, x.T @ dz, dz.sum(axis=0)


def mlp_forward(x, layers, activations):
    """Every layer in turn; ``layers`` is ``[(W, b), ...]``, ``activations`` from :func:`activation`."""
    h = x
    for (W, b), act in zip(layers, activations):
        h = act(h @ W + b)
    return h


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of integer ``labels`` and its gradient ``(softmax − onehot)/B``."""
    B = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows = np.arange(B)
    loss = np.mean(np.log(total[:, 0]) - shifted[rows, labels])
    grad = exp / total
    grad[rows, labels] -= 1
    grad /= B
    return loss, grad


def sgd_momentum(params, grads, velocity, lr, momentum):
    """PyTorch-style SGD with momentum, in place."""
    velocity *= momentum
    velocity += grads
    params -= lr * velocity


class Adam:
    """Adam over a list of arrays, in place (the update of ``fusedense.reference.adam_step``)."""

    def __init__(self, arrays, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = [np.zeros_like(a) for a in arrays]
        self.v = [np.zeros_like(a) for a in arrays]
        self.t = 0

    def step(self, arrays, grads):
        self.t += 1
        step_size = self.lr / (1 - self.beta1**self.t)
        v_correction = 1 - self.beta2**self.t
        for p, g, m, v in zip(arrays, grads, self.m, self.v):
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            p -= step_size * m / (np.sqrt(v / v_correction) + self.eps)


class MLPTrainer:
    """Relu hidden layers, softmax cross-entropy on the last layer's logits, Adam."""

    def __init__(self, layers, **adam):
        self.layers = layers
        self.adam = Adam([a for layer in layers for a in layer], **adam)

    def step(self, x, labels):
        """One minibatch: forward, loss, backward, Adam update. Returns the loss."""
        inputs, h = [], x
        for W, b in self.layers[:-1]:
            inputs.append(h)
            h = np.maximum(h @ W + b, 0)
        inputs.append(h)
        W, b = self.layers[-1]
        loss, dz = softmax_cross_entropy(h @ W + b, labels)
        grads = []
        for l in reversed(range(len(self.layers))):
            W, _ = self.layers[l]
            grads[:0] = [inputs[l].T @ dz, dz.sum(axis=0)]
            if l:
                dz = (dz @ W.T) * (inputs[l] > 0)  # inputs[l] is the relu output of layer l-1
        self.adam.step([a for layer in self.layers for a in layer], grads)
        return loss
