"""Weight penalties (Keras's ``keras.regularizers``): ``fd.layers.Dense(64, kernel_regularizer=fd.regularizers.l2(1e-4))``
adds ``l2·Σ W²`` (and/or ``l1·Σ|W|``) to the training loss, so ``2·l2·W + l1·sign(W)`` to the
kernel's gradient, on kernels only (biases are not penalised), as in Keras. A Sequential model
puts each Dense layer's (l1, l2) into its network's layer record (``MLP.penalties``), and the
fused training step adds the penalty and its gradient itself (no pass of its own); ``penalty``
here is what ``evaluate`` adds to the loss.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Regularizer", "L1", "L2", "L1L2", "l1", "l2", "l1_l2", "get"]


class Regularizer:
    """``penalty(W)`` the loss term, ``add_gradient(W, dW)`` adds its gradient into ``dW``."""

    def __init__(self, l1=0.0, l2=0.0):
        for name, value in (("l1", l1), ("l2", l2)):
            if not (isinstance(value, (int, float, np.floating)) and np.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, weights) -> float:
        return self.penalty(weights)

    def penalty(self, W) -> float:
        total = 0.0
        if self.l1:
            total += self.l1 * float(np.abs(W).sum(dtype=np.float64))
        if self.l2:
            total += self.l2 * float(np.square(W, dtype=np.float64).sum())
        return total

    def add_gradient(self, W, dW):
        if self.l2:
            dW += (2 * self.l2) * W
        if self.l1:
            dW += self.l1 * np.sign(W)

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class L1L2(Regularizer):
    def __init__(self, l1=0.0, l2=0.0):
        super().__init__(l1, l2)


class L1(Regularizer):
    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


l1, l2, l1_l2 = L1, L2, L1L2  # Keras's function-style aliases


def get(identifier):
    """None, a Regularizer, 'l1' / 'l2' / 'l1_l2' (Keras defaults 0.01) or a Keras config dict."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    by_name = {"l1": L1, "l2": L2, "l1_l2": L1L2, "L1": L1, "L2": L2, "L1L2": L1L2}
    if isinstance(identifier, dict) and identifier.get("class_name") in by_name:
        return by_name[identifier["class_name"]](**(identifier.get("config") or {}))
    if isinstance(identifier, str) and identifier in by_name:
        return by_name[identifier]()
    raise ValueError(f"regularizer: expected None, 'l1', 'l2', 'l1_l2' or a fusedense.regularizers.Regularizer, "
                     f"got {identifier!r}")
