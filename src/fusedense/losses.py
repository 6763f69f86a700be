"""Losses by Keras's names, classes and functions (``keras.losses``), mapped onto the fused losses
of :mod:`fusedense.abi`.

    model.compile(loss=fd.losses.SparseCategoricalCrossentropy(from_logits=True))   # fused
    model.compile(loss="sparse_categorical_crossentropy")                         # probabilities

Keras's semantics: a loss built from a string, a function or a class without ``from_logits=True``
reads the model's outputs as probabilities (clipped to [1e-7, 1 - 1e-7]). The fused training step
computes the cross-entropies from the last layer's pre-activation (the logits), so

* a softmax (categorical losses) or sigmoid (binary cross-entropy) output layer with a
  probability loss trains fused on its logits — the same loss, except where Keras's clipping
  binds (a probability below 1e-7 or above 1 - 1e-7, where Keras's gradient is zero);
* ``from_logits=True`` with a linear output layer trains fused on the outputs as logits;
* any other output layer with a probability loss (e.g. a linear layer and the string
  ``"sparse_categorical_crossentropy"``) trains on Keras's clipped probability formula, and
  ``from_logits=True`` on a softmax/sigmoid layer reads its outputs as logits, as Keras does (both
  with a warning): the loss's gradient with respect to the outputs is computed here and handed
  to the fused step as a weighted MSE target (one extra forward pass per batch).

``LossSpec.value(outputs, targets, from_logits, engine)`` evaluates a loss on a network's
outputs (for evaluate() and validation).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import abi

__all__ = ["Loss", "SparseCategoricalCrossentropy", "CategoricalCrossentropy", "BinaryCrossentropy",
           "MeanSquaredError", "sparse_categorical_crossentropy", "categorical_crossentropy",
           "binary_crossentropy", "mean_squared_error", "mse", "get", "get_loss", "LOSS_NAMES"]

EPSILON = 1e-7  # Keras's backend epsilon: probabilities are clipped to [eps, 1 - eps]


@dataclass(frozen=True)
class LossSpec:
    name: str
    id: int  # abi.LOSS_*
    sparse: bool  # targets are integer class labels
    output_activations: tuple  # activations whose pre-activation the fused loss reads ("identity" = logits)

    def value(self, outputs, targets, from_logits: bool, engine, sample_weight=None) -> float:
        """Mean loss of ``outputs`` (probabilities, or logits when ``from_logits``) vs ``targets``
        (as ``MLP.as_targets`` returns them), each row scaled by ``sample_weight`` (the mean
        still over all rows, Keras's "sum_over_batch_size"); ``engine`` (a gate from
        ``_backends.load``) computes the losses it has kernels for."""
        if sample_weight is None and (self.id == abi.LOSS_MSE or from_logits):
            return engine.loss(self.id, outputs, targets, None)
        return float(np.mean(_per_sample(self.id, outputs, targets, from_logits) *
                             (1.0 if sample_weight is None else sample_weight)))


_SPECS = [
    LossSpec("sparse_categorical_crossentropy", abi.LOSS_SPARSE_XENT, True, ("softmax", "identity")),
    LossSpec("categorical_crossentropy", abi.LOSS_CATEGORICAL_XENT, False, ("softmax", "identity")),
    LossSpec("binary_crossentropy", abi.LOSS_BINARY_XENT, False, ("sigmoid", "identity")),
    LossSpec("mean_squared_error", abi.LOSS_MSE, False, ()),  # () = any output activation
]
_BY_NAME = {spec.name: spec for spec in _SPECS}
_ALIASES = {"mse": "mean_squared_error", "sparse_softmax_cross_entropy": "sparse_categorical_crossentropy",
            "softmax_cross_entropy": "categorical_crossentropy", "binary_cross_entropy": "binary_crossentropy"}
LOSS_NAMES = tuple(_BY_NAME) + tuple(_ALIASES)


def _spec(name) -> LossSpec:
    if isinstance(name, Loss):
        return name.spec
    spec = _BY_NAME.get(_ALIASES.get(name, name)) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"loss: unknown loss {name!r}; expected one of {', '.join(LOSS_NAMES)}, "
                         f"a fusedense.losses class or function")
    return spec


def get_loss(name, output_activation: str) -> LossSpec:
    """The loss called ``name`` as the fused step reads it (``fd.MLP``: a linear output layer's
    outputs are logits), checked against the network's output activation."""
    spec = _spec(name)
    if spec.output_activations and output_activation not in spec.output_activations:
        allowed = " or ".join(repr(a) for a in spec.output_activations)
        raise ValueError(f"loss: {spec.name!r} needs an output layer with activation {allowed} "
                         f"('identity'/'linear' means the outputs are logits), got {output_activation!r}")
    return spec


# --- Keras's per-sample formulas (numpy, float64) ------------------------------------------------

def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


def _per_sample(loss_id, outputs, targets, from_logits):
    """Each row's loss (Keras's ``keras.losses.*`` functions, the mean over the last axis where Keras takes one)."""
    out = np.asarray(outputs, np.float64)
    if loss_id == abi.LOSS_MSE:
        return np.square(out - targets).mean(axis=-1)
    if loss_id == abi.LOSS_BINARY_XENT:
        if from_logits:
            return -(targets * _log_sigmoid(out) + (1 - targets) * _log_sigmoid(-out)).mean(axis=-1)
        p = np.clip(out, EPSILON, 1 - EPSILON)
        return -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean(axis=-1)
    log_p = _log_softmax(out) if from_logits else \
        np.log(np.clip(out / out.sum(axis=-1, keepdims=True), EPSILON, 1 - EPSILON))
    if loss_id == abi.LOSS_SPARSE_XENT:
        return -log_p[np.arange(len(log_p)), np.asarray(targets, np.int64)]
    return -(targets * log_p).sum(axis=-1)


def output_loss_and_gradient(loss_id, outputs, targets, from_logits, sample_weight=None):
    """Keras's loss of ``outputs`` read as probabilities (clipped) or as logits (mean over the B
    rows, each scaled by its weight) and its gradient with respect to ``outputs`` (B, C), float64;
    the clip's gradient is zero where it binds, as in Keras."""
    out = np.asarray(outputs, np.float64)
    B, C = out.shape
    w = np.ones(B) if sample_weight is None else np.asarray(sample_weight, np.float64)
    per_row = _per_sample(loss_id, out, targets, from_logits)
    t = np.eye(C)[np.asarray(targets, np.int64)] if loss_id == abi.LOSS_SPARSE_XENT else targets
    if loss_id == abi.LOSS_BINARY_XENT:
        if from_logits:
            grad = (1 / (1 + np.exp(-out)) - t) / C
        else:
            p = np.clip(out, EPSILON, 1 - EPSILON)
            grad = ((out > EPSILON) & (out < 1 - EPSILON)) * (-t / p + (1 - t) / (1 - p)) / C
    elif from_logits:
        grad = np.exp(_log_softmax(out)) * t.sum(axis=1, keepdims=True) - t
    else:
        total = out.sum(axis=1, keepdims=True)
        q = out / total
        inside = (q > EPSILON) & (q < 1 - EPSILON)
        # L = -Σ_j t_j log q_j, q_j = out_j / Σ out: dL/dout_k = (Σ_j t_j·[j inside] - t_k·[k inside]/q_k) / Σ out
        grad = ((t * inside).sum(axis=1, keepdims=True) - np.where(inside, t / np.where(inside, q, 1.0), 0.0)) / total
    grad *= (w / B)[:, None]
    return float(np.mean(per_row * w)), grad


# --- Keras's API: functions (per-sample losses) and classes (scalar, with sample_weight) -----------

def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False):
    return _per_sample(abi.LOSS_SPARSE_XENT, y_pred, np.asarray(y_true).reshape(len(y_pred)), from_logits)


def categorical_crossentropy(y_true, y_pred, from_logits=False):
    return _per_sample(abi.LOSS_CATEGORICAL_XENT, y_pred, np.asarray(y_true, np.float64), from_logits)


def binary_crossentropy(y_true, y_pred, from_logits=False):
    y_pred = np.asarray(y_pred, np.float64)
    return _per_sample(abi.LOSS_BINARY_XENT, y_pred, np.asarray(y_true, np.float64).reshape(y_pred.shape), from_logits)


def mean_squared_error(y_true, y_pred):
    y_pred = np.asarray(y_pred, np.float64)
    return _per_sample(abi.LOSS_MSE, y_pred, np.asarray(y_true, np.float64).reshape(y_pred.shape), False)


mse = MSE = mean_squared_error
_FUNCTIONS = {f: f.__name__ for f in (sparse_categorical_crossentropy, categorical_crossentropy,
                                      binary_crossentropy, mean_squared_error)}


class Loss:
    """Base of the loss classes: ``loss(y_true, y_pred, sample_weight=None)`` is the mean over the
    batch (Keras's reduction "sum_over_batch_size"); ``fn`` names the fused loss."""

    fn = None

    def __init__(self, from_logits=False, reduction="sum_over_batch_size", name=None):
        if reduction != "sum_over_batch_size":
            raise NotImplementedError(f"reduction: fusedense's fused losses take the batch mean "
                                      f"('sum_over_batch_size'), got {reduction!r}")
        self.from_logits = bool(from_logits)
        self.name = name or _FUNCTIONS[type(self).fn]
        self.spec = _spec(_FUNCTIONS[type(self).fn])

    def __call__(self, y_true, y_pred, sample_weight=None):
        kwargs = {} if type(self).fn is mean_squared_error else {"from_logits": self.from_logits}
        per_sample = type(self).fn(y_true, y_pred, **kwargs)
        return float(np.mean(per_sample * (1.0 if sample_weight is None else np.asarray(sample_weight))))

    def get_config(self):
        return {"name": self.name, "reduction": "sum_over_batch_size", "from_logits": self.from_logits}

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class SparseCategoricalCrossentropy(Loss):
    fn = sparse_categorical_crossentropy

    def __init__(self, from_logits=False, ignore_class=None, reduction="sum_over_batch_size",
                 name="sparse_categorical_crossentropy"):
        if ignore_class is not None:
            raise NotImplementedError("ignore_class: not supported by the fused loss")
        super().__init__(from_logits, reduction, name)


class CategoricalCrossentropy(Loss):
    fn = categorical_crossentropy

    def __init__(self, from_logits=False, label_smoothing=0.0, reduction="sum_over_batch_size",
                 name="categorical_crossentropy"):
        if label_smoothing:
            raise NotImplementedError("label_smoothing: smooth the one-hot targets before fit instead")
        super().__init__(from_logits, reduction, name)


class BinaryCrossentropy(Loss):
    fn = binary_crossentropy

    def __init__(self, from_logits=False, label_smoothing=0.0, reduction="sum_over_batch_size",
                 name="binary_crossentropy"):
        if label_smoothing:
            raise NotImplementedError("label_smoothing: smooth the targets before fit instead")
        super().__init__(from_logits, reduction, name)


class MeanSquaredError(Loss):
    fn = mean_squared_error

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error"):
        super().__init__(False, reduction, name)


_CLASSES = {cls.__name__: cls for cls in (SparseCategoricalCrossentropy, CategoricalCrossentropy,
                                          BinaryCrossentropy, MeanSquaredError)}


def get(identifier) -> Loss:
    """A loss object from a Keras name, a loss function of this module, a Keras config dict
    ``{"class_name": ..., "config": {...}}`` or a Loss object (returned as is)."""
    if isinstance(identifier, Loss):
        return identifier
    if callable(identifier) and identifier in _FUNCTIONS:
        identifier = _FUNCTIONS[identifier]
    if isinstance(identifier, dict) and identifier.get("class_name") in _CLASSES:
        config = {k: v for k, v in (identifier.get("config") or {}).items() if k not in ("name", "reduction")}
        return _CLASSES[identifier["class_name"]](**config)
    spec = _spec(identifier)
    by_fn = {fn_name: cls for cls in _CLASSES.values() for fn_name in [_FUNCTIONS[cls.fn]]}
    return by_fn[spec.name]()


def serialize(loss: Loss):
    """The loss's name, or ``{"class_name": ..., "config": {"from_logits": true}}`` for logits
    (JSON; ``get`` reads both)."""
    if not loss.from_logits:
        return loss.spec.name
    return {"class_name": type(loss).__name__, "config": {"from_logits": True}}
