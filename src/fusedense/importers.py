"""Networks from other libraries as ``fd.MLP``: PyTorch ``nn.Sequential`` and fitted
scikit-learn MLPs, also reached as ``fd.MLP.from_torch`` / ``fd.MLP.from_sklearn``. Weights are
copied once (PyTorch's ``weight`` is out × in, so it is transposed here, once); the source
library is not imported by fusedense itself.
"""
from __future__ import annotations

import numpy as np

from .network import MLP

__all__ = ["from_torch", "from_sklearn"]


def _torch_activation(module):
    """(activation name, alpha) for a PyTorch activation module, or None if it is not one."""
    kind = type(module).__name__
    if kind in ("ReLU", "Sigmoid", "Tanh", "SiLU"):
        return {"ReLU": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "SiLU": "silu"}[kind], None
    if kind == "LeakyReLU":
        return "leaky_relu", module.negative_slope
    if kind == "ELU":
        return "elu", module.alpha
    if kind == "GELU":
        return ("gelu" if module.approximate == "tanh" else "gelu_erf"), None
    if kind == "Softplus":
        if module.beta != 1:
            raise ValueError(f"module: Softplus(beta={module.beta}) is not supported; only beta=1")
        return "softplus", None  # torch returns x past its threshold: log1p(e^-20) is below float32 noise
    if kind in ("Softmax", "LogSoftmax"):
        if module.dim not in (None, -1, 1):
            raise ValueError(f"module: {kind}(dim={module.dim}) is not supported; only the feature axis (dim=1 or -1)")
        return ("softmax" if kind == "Softmax" else "log_softmax"), None
    return None


_PASS_THROUGH = ("Identity", "Dropout", "Flatten")  # identity on (batch, features) in eval mode


def from_torch(module, dtype=np.float32, backend=None) -> MLP:
    """An MLP equal to ``module``: an nn.Sequential (or a single nn.Linear) of Linear layers, each
    optionally followed by one activation (ReLU, LeakyReLU, ELU, Sigmoid, Tanh, GELU, SiLU,
    Softplus, Softmax, LogSoftmax); Identity, Dropout and Flatten are skipped."""
    children = list(module.children()) if type(module).__name__ == "Sequential" else [module]
    linears, activations, alphas = [], [], []
    for i, child in enumerate(children):
        kind = type(child).__name__
        if kind == "Linear":
            linears.append(child)
            activations.append("identity")
            alphas.append(None)
        elif kind in _PASS_THROUGH:
            continue
        else:
            act = _torch_activation(child)
            if act is None:
                raise ValueError(f"module[{i}]: {kind} is not supported; expected Linear layers and "
                                 f"activation modules")
            if not linears or activations[-1] != "identity":
                raise ValueError(f"module[{i}]: {kind} must directly follow a Linear layer (one activation per layer)")
            activations[-1], alphas[-1] = act
    if not linears:
        raise ValueError("module: found no Linear layer")
    sizes = [linears[0].in_features] + [layer.out_features for layer in linears]
    net = MLP(sizes, activations, alphas=alphas, dtype=dtype, backend=backend)
    for (W, b), layer in zip(net.weights, linears):
        W[...] = layer.weight.detach().cpu().numpy().T
        b[...] = 0 if layer.bias is None else layer.bias.detach().cpu().numpy()
    return net


def from_sklearn(estimator, dtype=np.float32, backend=None) -> MLP:
    """An MLP computing a fitted MLPClassifier / MLPRegressor's output layer: class probabilities
    (one logistic column for binary classifiers — ``predict_proba[:, 1]``) or the regression output."""
    if not hasattr(estimator, "coefs_") or not hasattr(estimator, "out_activation_"):
        raise ValueError(f"estimator: expected a fitted MLPClassifier or MLPRegressor, got {type(estimator).__name__}")
    coefs, intercepts = estimator.coefs_, estimator.intercepts_
    sizes = [coefs[0].shape[0]] + [W.shape[1] for W in coefs]
    activations = [estimator.activation] * (len(coefs) - 1) + [estimator.out_activation_]
    net = MLP(sizes, activations, dtype=dtype, backend=backend)
    net.set_weights([a for pair in zip(coefs, intercepts) for a in pair])
    return net


# MLP cannot import this module (it builds on MLP), so it gives MLP its importing constructors.
MLP.from_torch = staticmethod(from_torch)
MLP.from_sklearn = staticmethod(from_sklearn)
