"""Metrics by their Keras names: ``fn(outputs, targets, from_logits) -> float``.

``"accuracy"`` (or ``"acc"``) means what Keras infers from the loss: sparse categorical accuracy
for integer labels, binary accuracy for a binary loss or a single output, else categorical.
"""
from __future__ import annotations

import numpy as np

__all__ = ["get_metric"]


def sparse_categorical_accuracy(outputs, labels, from_logits):
    return float((outputs.argmax(axis=1) == labels).mean())


def categorical_accuracy(outputs, targets, from_logits):
    return float((outputs.argmax(axis=1) == targets.argmax(axis=1)).mean())


def binary_accuracy(outputs, targets, from_logits):
    threshold = 0.0 if from_logits else 0.5  # sigmoid(0) = 0.5
    return float(((outputs > threshold) == (targets > 0.5)).mean())


def mean_absolute_error(outputs, targets, from_logits):
    return float(np.abs(outputs - targets).mean())


def mean_squared_error(outputs, targets, from_logits):
    return float(((outputs - targets) ** 2).mean())


_METRICS = {f.__name__: f for f in (sparse_categorical_accuracy, categorical_accuracy, binary_accuracy,
                                     mean_absolute_error, mean_squared_error)}
_ALIASES = {"mae": "mean_absolute_error", "mse": "mean_squared_error"}


def get_metric(name, loss, n_outputs):
    """The metric function for ``name`` given the compiled loss (a fusedense.losses.Loss)."""
    if name in ("accuracy", "acc"):
        if loss.sparse:
            return sparse_categorical_accuracy
        if loss.name == "binary_crossentropy" or n_outputs == 1:
            return binary_accuracy
        return categorical_accuracy
    fn = _METRICS.get(_ALIASES.get(name, name)) if isinstance(name, str) else None
    if fn is None:
        choices = ["accuracy", *_METRICS, *_ALIASES]
        raise ValueError(f"metrics: unknown metric {name!r}; expected one of {', '.join(choices)}")
    if fn is sparse_categorical_accuracy and not loss.sparse:
        raise ValueError(f"metrics: {name!r} needs integer labels, but loss {loss.name!r} takes one-hot/float targets")
    return fn
