"""Training losses by their Keras names, mapped onto the fused losses of :mod:`fusedense.abi`.

The fused training step computes cross-entropies from the last layer's PRE-activation (the
logits), so a cross-entropy needs an output layer whose activation turns logits into what the
loss expects: softmax for the categorical losses, sigmoid for binary cross-entropy, or a linear
layer (then the outputs are logits, like Keras's ``from_logits=True``).

``Loss.value(outputs, targets)`` evaluates the loss on a network's outputs (for evaluate() and
validation), with Keras's clipping of probabilities at 1e-7.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import abi

__all__ = ["Loss", "get_loss", "LOSS_NAMES"]

_EPSILON = 1e-7  # Keras's backend epsilon: probabilities are clipped to [eps, 1 - eps]


@dataclass(frozen=True)
class Loss:
    name: str
    id: int  # abi.LOSS_*
    sparse: bool  # targets are integer class labels
    output_activations: tuple  # activations the last layer may have ("identity" = logits)

    def value(self, outputs: np.ndarray, targets: np.ndarray, from_logits: bool, engine) -> float:
        """Mean loss of ``outputs`` (probabilities, or logits when ``from_logits``) vs ``targets``
        (as ``MLP.as_targets`` returns them); ``engine`` (a gate from ``_backends.load``) computes
        the losses it has kernels for: MSE, and the cross-entropies of logits."""
        if self.id == abi.LOSS_MSE or from_logits:
            return engine.loss(self.id, outputs, targets, None)
        p = np.clip(outputs, _EPSILON, 1 - _EPSILON)
        if self.id == abi.LOSS_SPARSE_XENT:
            return float(-np.log(p[np.arange(len(p)), targets]).mean())
        if self.id == abi.LOSS_CATEGORICAL_XENT:
            return float(-(targets * np.log(p)).sum(axis=1).mean())
        return float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())


_LOSSES = [
    Loss("sparse_categorical_crossentropy", abi.LOSS_SPARSE_XENT, True, ("softmax", "identity")),
    Loss("categorical_crossentropy", abi.LOSS_CATEGORICAL_XENT, False, ("softmax", "identity")),
    Loss("binary_crossentropy", abi.LOSS_BINARY_XENT, False, ("sigmoid", "identity")),
    Loss("mean_squared_error", abi.LOSS_MSE, False, ()),  # () = any output activation
]
_BY_NAME = {loss.name: loss for loss in _LOSSES}
_ALIASES = {"mse": "mean_squared_error", "sparse_softmax_cross_entropy": "sparse_categorical_crossentropy",
            "softmax_cross_entropy": "categorical_crossentropy", "binary_cross_entropy": "binary_crossentropy"}
LOSS_NAMES = tuple(_BY_NAME) + tuple(_ALIASES)


def get_loss(name, output_activation: str) -> Loss:
    """The loss called ``name``, checked against the network's output activation."""
    loss = _BY_NAME.get(_ALIASES.get(name, name)) if isinstance(name, str) else None
    if loss is None:
        raise ValueError(f"loss: unknown loss {name!r}; expected one of {', '.join(LOSS_NAMES)}")
    if loss.output_activations and output_activation not in loss.output_activations:
        allowed = " or ".join(repr(a) for a in loss.output_activations)
        raise ValueError(f"loss: {loss.name!r} needs an output layer with activation {allowed} "
                         f"('identity'/'linear' means the outputs are logits), got {output_activation!r}")
    return loss
