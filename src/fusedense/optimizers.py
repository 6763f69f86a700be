"""Optimizers for the model fronts: each is a small record of hyperparameters that fills the
float64 ``hyper`` vector of :func:`mlp_train_step` (positions in :mod:`fusedense.abi`).

The update itself runs inside the backend's fused training step; the optimizer's state
(velocity, or Adam's m and v) lives in the model as ``opt_state`` with ``state_rows`` rows.
Defaults are Keras's (``Adam(learning_rate=0.001)``, ``SGD(learning_rate=0.01)``).

    >>> model.compile(optimizer=fd.optimizers.Adam(learning_rate=3e-4), loss="mse")
"""
from __future__ import annotations

import math

import numpy as np

from . import abi

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adagrad", "get"]


def _number(name, value, low, high=None, low_inclusive=True):
    """``value`` as a float after checking ``low <(=) value < high``; the error names the argument."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}") from None
    ok = (value >= low if low_inclusive else value > low) and (high is None or value < high)
    if not (math.isfinite(value) and ok):
        bound = f"{'>=' if low_inclusive else '>'} {low}" + (f" and < {high}" if high is not None else "")
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    return value


class _Hyperparameter:
    """An optimizer attribute checked on every assignment, in ``__init__`` and after (a callback
    or a user setting ``model.optimizer.learning_rate = nan`` mid-training gets the same error)."""

    def __init__(self, low, high=None, low_inclusive=True):
        self.bounds = dict(low=low, high=high, low_inclusive=low_inclusive)

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, optimizer, owner=None):
        if optimizer is None:
            return self
        try:
            return optimizer.__dict__[self.name]
        except KeyError:  # (hasattr/getattr with a default expect AttributeError)
            raise AttributeError(self.name) from None

    def __set__(self, optimizer, value):
        optimizer.__dict__[self.name] = _number(self.name, value, **self.bounds)


class Optimizer:
    """Base class: subclasses set ``state_rows`` and fill their slots of ``hyper``."""

    state_rows = 1
    learning_rate = _Hyperparameter(0, low_inclusive=False)
    weight_decay = _Hyperparameter(0)

    def __init__(self, learning_rate, weight_decay=0.0):
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay

    def hyper(self, step: int) -> np.ndarray:
        """The ``hyper`` vector after ``step`` updates (the engine applies update ``step + 1`` once
        the caller sets H_STEP)."""
        h = np.zeros(abi.N_HYPER, dtype=np.float64)
        h[abi.H_LR] = self.learning_rate
        h[abi.H_WEIGHT_DECAY] = self.weight_decay
        h[abi.H_STEP] = h[abi.H_APPLIED] = step
        h[abi.H_PENALTY_SCALE] = 1.0  # the layer record's kernel penalties as they are
        self._fill(h)
        return h

    def _fill(self, h):
        raise NotImplementedError

    def get_config(self) -> dict:
        """Constructor arguments (JSON-serialisable): ``type(opt)(**opt.get_config())`` rebuilds it."""
        return {name: getattr(self, name) for name in self._config_names}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """PyTorch-style SGD with optional (Nesterov) momentum and L2 weight decay."""

    state_rows = 1  # velocity
    _config_names = ("learning_rate", "momentum", "nesterov", "weight_decay")

    momentum = _Hyperparameter(0, 1)

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(learning_rate, weight_decay)
        self.momentum = momentum
        self.nesterov = bool(nesterov)

    def _fill(self, h):
        h[abi.H_OPTIMIZER] = abi.OPT_SGD
        h[abi.H_BETA1] = self.momentum
        h[abi.H_NESTEROV] = float(self.nesterov)


class Adam(Optimizer):
    """Adam; ``weight_decay`` is L2 added to the gradient (AdamW decouples it)."""

    state_rows = 2  # m, v
    decoupled = False
    _config_names = ("learning_rate", "beta_1", "beta_2", "epsilon", "weight_decay")

    beta_1, beta_2 = _Hyperparameter(0, 1), _Hyperparameter(0, 1)
    epsilon = _Hyperparameter(0, low_inclusive=False)

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0):
        super().__init__(learning_rate, weight_decay)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def _fill(self, h):
        h[abi.H_OPTIMIZER] = abi.OPT_ADAM
        h[abi.H_BETA1] = self.beta_1
        h[abi.H_BETA2] = self.beta_2
        h[abi.H_EPS] = self.epsilon
        h[abi.H_DECOUPLED] = float(self.decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (``p -= lr·wd·p`` before the Adam update); Keras default wd 0.004."""

    decoupled = True

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay)


class Adagrad(Optimizer):
    """PyTorch's Adagrad (G += g²; p −= lr·g/(√G + ε)); for sparse input only: the engines run it
    in ``sparse_train_step`` (lazily: a W0 row's G grows only when a batch uses the row). A dense
    batch with Adagrad gets the gate's ValueError."""

    state_rows = 1  # G, the running sum of squared gradients
    _config_names = ("learning_rate", "epsilon", "weight_decay")

    epsilon = _Hyperparameter(0, low_inclusive=False)

    def __init__(self, learning_rate=0.01, epsilon=1e-10, weight_decay=0.0):
        super().__init__(learning_rate, weight_decay)
        self.epsilon = epsilon

    def _fill(self, h):
        h[abi.H_OPTIMIZER] = abi.OPT_ADAGRAD
        h[abi.H_EPS] = self.epsilon


class RMSprop(Optimizer):
    """Keras's RMSprop (v = ρ v + (1−ρ) g², p −= lr·g/√(v + ε), optionally through a momentum
    buffer), Keras's defaults and argument names; ``weight_decay`` decoupled as in Keras
    (p −= lr·wd·p first). ``centered=True`` is not implemented."""

    state_rows = 2  # the mean square, the momentum buffer
    _config_names = ("learning_rate", "rho", "momentum", "epsilon", "weight_decay")

    rho, momentum = _Hyperparameter(0, 1), _Hyperparameter(0, 1)
    epsilon = _Hyperparameter(0, low_inclusive=False)

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, weight_decay=0.0):
        if centered:
            raise NotImplementedError("centered: RMSprop(centered=True) is not implemented in fusedense")
        super().__init__(learning_rate, 0.0 if weight_decay is None else weight_decay)
        self.rho, self.momentum, self.epsilon = rho, momentum, epsilon

    def _fill(self, h):
        h[abi.H_OPTIMIZER] = abi.OPT_RMSPROP
        h[abi.H_BETA1] = self.momentum
        h[abi.H_BETA2] = self.rho
        h[abi.H_EPS] = self.epsilon


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "adagrad": Adagrad, "rmsprop": RMSprop}


def get(optimizer) -> Optimizer:
    """An optimizer object from a name ('sgd', 'adam', 'adamw': Keras defaults) or an instance."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in _BY_NAME:
        return _BY_NAME[optimizer.lower()]()
    raise ValueError(f"optimizer: expected one of {', '.join(repr(n) for n in _BY_NAME)} or a "
                     f"fusedense.optimizers.Optimizer, got {optimizer!r}")


def from_config(name: str, config: dict) -> Optimizer:
    """Rebuilds an optimizer saved as ``(type(opt).__name__, opt.get_config())``."""
    classes = {cls.__name__: cls for cls in _BY_NAME.values()}
    if name not in classes:
        raise ValueError(f"optimizer: unknown optimizer class {name!r}; expected one of {', '.join(classes)}")
    return classes[name](**config)
