"""Metrics by Keras's names and classes (``keras.metrics``): ``metrics=["accuracy"]`` or
``metrics=[fd.metrics.SparseCategoricalAccuracy()]``.

``"accuracy"`` (or ``"acc"``) means what Keras 3 infers from the shapes: binary accuracy for a
single output, sparse categorical accuracy for integer labels, else categorical accuracy (also
for several sigmoid outputs with binary cross-entropy, as in Keras).
Each metric is a per-sample function ``fn(outputs, targets, from_logits) -> (n,)``; ``value`` takes
their mean, weighted by ``sample_weight`` as Keras weights its metrics (Σ w·m / Σ w).
"""
from __future__ import annotations

import numpy as np

__all__ = ["Metric", "SparseCategoricalAccuracy", "CategoricalAccuracy", "BinaryAccuracy", "MeanAbsoluteError",
           "MeanSquaredError", "Accuracy", "get_metric", "value"]


def sparse_categorical_accuracy(outputs, labels, from_logits):
    return outputs.argmax(axis=1) == labels


def categorical_accuracy(outputs, targets, from_logits):
    return outputs.argmax(axis=1) == targets.argmax(axis=1)


def binary_accuracy(outputs, targets, from_logits):
    threshold = 0.0 if from_logits else 0.5  # sigmoid(0) = 0.5
    return ((outputs > threshold) == (targets > 0.5)).mean(axis=1)


def mean_absolute_error(outputs, targets, from_logits):
    return np.abs(outputs - targets).mean(axis=1)


def mean_squared_error(outputs, targets, from_logits):
    return ((outputs - targets) ** 2).mean(axis=1)


def value(fn, outputs, targets, from_logits, sample_weight=None) -> float:
    """The metric's mean over the rows, weighted by ``sample_weight`` when given."""
    per_sample = fn(outputs, targets, from_logits)
    if sample_weight is None:
        return float(np.mean(per_sample))
    total = float(np.sum(sample_weight))
    return float(np.dot(per_sample, sample_weight) / total) if total else 0.0


class Metric:
    """A metric object: ``name`` (the key in the logs) and ``fn`` (per-sample values)."""

    fn = None

    def __init__(self, name=None, dtype=None):
        self.name = name or type(self).fn.__name__

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_pred = np.asarray(y_pred)
        return value(type(self).fn, y_pred, np.asarray(y_true).reshape(y_pred.shape[0], -1).squeeze(-1)
                     if type(self).fn is sparse_categorical_accuracy else np.asarray(y_true).reshape(y_pred.shape),
                     False, sample_weight)


def _metric_class(name, fn):
    return type(name, (Metric,), {"fn": staticmethod(fn), "__doc__": f"Keras's {name}."})


SparseCategoricalAccuracy = _metric_class("SparseCategoricalAccuracy", sparse_categorical_accuracy)
CategoricalAccuracy = _metric_class("CategoricalAccuracy", categorical_accuracy)
BinaryAccuracy = _metric_class("BinaryAccuracy", binary_accuracy)
MeanAbsoluteError = _metric_class("MeanAbsoluteError", mean_absolute_error)
MeanSquaredError = _metric_class("MeanSquaredError", mean_squared_error)


class Accuracy(Metric):
    """``"accuracy"``: resolved against the loss at compile time (see the module docstring)."""

    def __init__(self, name="accuracy", dtype=None):
        self.name = name


_METRICS = {f.__name__: f for f in (sparse_categorical_accuracy, categorical_accuracy, binary_accuracy,
                                     mean_absolute_error, mean_squared_error)}
_ALIASES = {"mae": "mean_absolute_error", "mse": "mean_squared_error"}


def get_metric(name, loss, n_outputs):
    """(log name, per-sample function) for ``name`` (a Keras name or a Metric) given the compiled
    loss (a fusedense.losses.LossSpec)."""
    if isinstance(name, Metric):
        if isinstance(name, Accuracy):
            return name.name, get_metric("accuracy", loss, n_outputs)[1]
        return name.name, type(name).fn
    if name in ("accuracy", "acc"):  # Keras 3 decides from the shapes alone, whatever the loss
        if n_outputs == 1:
            return name, binary_accuracy
        return name, sparse_categorical_accuracy if loss.sparse else categorical_accuracy
    fn = _METRICS.get(_ALIASES.get(name, name)) if isinstance(name, str) else None
    if fn is None:
        choices = ["accuracy", *_METRICS, *_ALIASES]
        raise ValueError(f"metrics: unknown metric {name!r}; expected one of {', '.join(choices)} or a "
                         f"fusedense.metrics.Metric")
    if fn is sparse_categorical_accuracy and not loss.sparse:
        raise ValueError(f"metrics: {name!r} needs integer labels, but loss {loss.name!r} takes one-hot/float targets")
    return name, fn
