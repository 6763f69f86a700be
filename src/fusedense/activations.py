"""The activation registry: the one place where activations are defined.

Every backend dispatches on the integer ``id`` of an activation; the ids are part of the
compiled ABI and must never be renumbered (append new activations at the end).

Each activation has a NumPy forward ``f(z, alpha)`` and, for element-wise activations, a
derivative ``f'(z, y, alpha)`` that may use the pre-activation ``z`` or the output ``y``.
``from_output`` says whether the derivative needs only ``y`` (so training need not keep ``z``).
Row-wise activations (softmax, log_softmax) have no element-wise derivative; use
:func:`activation_vjp` for the vector-Jacobian product that backprop needs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

__all__ = ["Activation", "ACTIVATIONS", "get_activation", "activation_forward", "activation_vjp"]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class Activation:
    name: str
    id: int
    forward: Callable  # (z, alpha) -> y
    derivative: Optional[Callable]  # (z, y, alpha) -> dy/dz element-wise; None for row-wise
    from_output: bool  # derivative computable from y alone
    default_alpha: Optional[float] = None  # None: the activation takes no alpha
    rowwise: bool = False

    @property
    def has_alpha(self) -> bool:
        return self.default_alpha is not None


# --- forwards (stable forms) -------------------------------------------------------------

def _identity(z, alpha):
    return z.copy()


def _relu(z, alpha):
    return np.maximum(z, 0)


def _leaky_relu(z, alpha):
    return np.where(z > 0, z, alpha * z)


def _elu(z, alpha):
    # expm1 keeps precision near 0; minimum() keeps exp from overflowing on the unused branch
    return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0)))


def _sigmoid(z, alpha):
    # exp of a non-positive number only: no overflow for large |z|
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _tanh(z, alpha):
    return np.tanh(z)


def _gelu(z, alpha):
    return 0.5 * z * (1 + np.tanh(_SQRT_2_OVER_PI * (z + _GELU_C * z**3)))


def _erf(x):
    from scipy.special import erf  # lazily: scipy.special costs ~0.3 s at import

    return erf(x)


def _gelu_erf(z, alpha):
    return 0.5 * z * (1 + _erf(z * _INV_SQRT_2))


def _silu(z, alpha):
    return z * _sigmoid(z, alpha)


def _softplus(z, alpha):
    # log(1 + e^z) = max(z, 0) + log1p(e^-|z|)
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def _softmax(z, alpha):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(z, alpha):
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# --- derivatives dy/dz --------------------------------------------------------------------

def _d_identity(z, y, alpha):
    return np.ones_like(y if z is None else z)


def _d_relu(z, y, alpha):
    return ((y if z is None else z) > 0).astype((y if z is None else z).dtype)


def _d_leaky_relu(z, y, alpha):
    # with alpha >= 0, y > 0 exactly when z > 0, so y suffices
    s = y if z is None else z
    return np.where(s > 0, 1, alpha).astype(s.dtype)


def _d_elu(z, y, alpha):
    # for z <= 0: d/dz alpha*(e^z - 1) = alpha*e^z = y + alpha
    if y is None:
        y = _elu(z, alpha)
    return np.where(y > 0, 1, y + alpha).astype(y.dtype)


def _d_sigmoid(z, y, alpha):
    if y is None:
        y = _sigmoid(z, alpha)
    return y * (1 - y)


def _d_tanh(z, y, alpha):
    if y is None:
        y = np.tanh(z)
    return 1 - y * y


def _d_gelu(z, y, alpha):
    inner = _SQRT_2_OVER_PI * (z + _GELU_C * z**3)
    t = np.tanh(inner)
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * _GELU_C * z * z)


def _d_gelu_erf(z, y, alpha):
    return 0.5 * (1 + _erf(z * _INV_SQRT_2)) + z * _INV_SQRT_2PI * np.exp(-0.5 * z * z)


def _d_silu(z, y, alpha):
    s = _sigmoid(z, alpha)
    return s * (1 + z * (1 - s))


def _d_softplus(z, y, alpha):
    return _sigmoid(z, alpha)


_REGISTRY = [
    Activation("identity", 0, _identity, _d_identity, from_output=True),
    Activation("relu", 1, _relu, _d_relu, from_output=True),
    Activation("leaky_relu", 2, _leaky_relu, _d_leaky_relu, from_output=True, default_alpha=0.01),
    Activation("elu", 3, _elu, _d_elu, from_output=True, default_alpha=1.0),
    Activation("sigmoid", 4, _sigmoid, _d_sigmoid, from_output=True),
    Activation("tanh", 5, _tanh, _d_tanh, from_output=True),
    Activation("gelu", 6, _gelu, _d_gelu, from_output=False),
    Activation("gelu_erf", 7, _gelu_erf, _d_gelu_erf, from_output=False),
    Activation("silu", 8, _silu, _d_silu, from_output=False),
    Activation("softplus", 9, _softplus, _d_softplus, from_output=False),
    Activation("softmax", 10, _softmax, None, from_output=True, rowwise=True),
    Activation("log_softmax", 11, _log_softmax, None, from_output=True, rowwise=True),
]

_BY_NAME = {a.name: a for a in _REGISTRY}
_ALIASES = {"linear": "identity", None: "identity", "swish": "silu", "logistic": "sigmoid"}

#: The registry's names, in id order.
ACTIVATIONS = tuple(a.name for a in _REGISTRY)
#: Activation by integer id (ids are list positions).
BY_ID = tuple(_REGISTRY)
assert all(a.id == i for i, a in enumerate(BY_ID))


def get_activation(name) -> Activation:
    """Look up an activation by name (or alias, e.g. ``"linear"``); ValueError names the choices."""
    if isinstance(name, Activation):
        return name
    try:
        return _BY_NAME[_ALIASES.get(name, name)]
    except (KeyError, TypeError):  # TypeError: an unhashable name such as a list
        raise ValueError(
            f"activation: unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}"
        ) from None


def resolve_alpha(act: Activation, alpha) -> float:
    """The alpha to pass to kernels: the default when None; an error if the activation has none."""
    if alpha is None:
        return float(act.default_alpha) if act.has_alpha else 0.0
    if not act.has_alpha:
        raise ValueError(
            f"alpha: activation {act.name!r} takes no alpha, got alpha={alpha!r}; "
            f"alpha applies to {', '.join(a.name for a in BY_ID if a.has_alpha)}"
        )
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise TypeError(f"alpha: expected a number for {act.name!r}, got {type(alpha).__name__} {alpha!r}") from None
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha: expected a finite number >= 0 for {act.name!r}, got {alpha!r}")
    return alpha


def activation_forward(act: Activation, z: np.ndarray, alpha: float) -> np.ndarray:
    return act.forward(z, alpha)


def activation_vjp(act: Activation, dy: np.ndarray, z, y, alpha: float) -> np.ndarray:
    """dz = dy · ∂y/∂z for one layer; uses y when the activation allows it, else z."""
    if act.name == "softmax":
        y = _softmax(z, alpha) if y is None else y
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    if act.name == "log_softmax":
        y = _log_softmax(z, alpha) if y is None else y
        return dy - np.exp(y) * dy.sum(axis=-1, keepdims=True)
    return dy * act.derivative(None if act.from_output and y is not None else z, y, alpha)
