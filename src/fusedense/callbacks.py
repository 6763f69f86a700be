"""Keras-style training callbacks: ``Callback`` (the hooks), ``History``, ``EarlyStopping`` and the
learning-rate schedule ``CosineDecay``.

``fit`` calls ``set_model(model)`` then ``on_train_begin``, ``on_epoch_begin(epoch)``,
``on_epoch_end(epoch, logs)`` (logs: {"loss": …, "accuracy": …, "val_loss": …}) and
``on_train_end``. A callback stops training by setting ``self.model.stop_training = True``.
"""
from __future__ import annotations

import math
import warnings

__all__ = ["Callback", "History", "EarlyStopping", "CosineDecay"]


class Callback:
    """Base class: override the hooks you need; ``self.model`` is the model being trained."""

    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass


class History(Callback):
    """Records every epoch's logs: ``history.history["val_loss"][epoch]``; ``fit`` returns it."""

    def __init__(self):
        self.history = {}
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


class EarlyStopping(Callback):
    """Stops training when ``monitor`` has not improved by more than ``min_delta`` for
    ``patience`` epochs; ``restore_best_weights`` puts back the best epoch's weights (Keras semantics).

    mode: 'min', 'max' or 'auto' (max for accuracy-like names, min otherwise).
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
        if mode == "auto":
            mode = "max" if "acc" in monitor or monitor.endswith("auc") else "min"
        self.monitor, self.mode = monitor, mode
        self.min_delta, self.patience, self.verbose = abs(float(min_delta)), int(patience), verbose
        self.baseline, self.restore_best_weights = baseline, restore_best_weights
        self.start_from_epoch = int(start_from_epoch)

    def _better(self, value, reference):
        if self.mode == "max":
            return value - self.min_delta > reference
        return value + self.min_delta < reference

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = -math.inf if self.mode == "max" else math.inf
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(f"EarlyStopping: monitor {self.monitor!r} is not among the logged values "
                          f"{sorted(logs or {})}; not stopping", RuntimeWarning, stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._better(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._better(current, self.baseline):
                self.wait = 0
                return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                self.model.set_weights(self.best_weights)
            if self.verbose:
                print(f"Epoch {epoch + 1}: early stopping (best {self.monitor} {self.best:.4f} "
                      f"at epoch {self.best_epoch + 1})")


class CosineDecay(Callback):
    """Sets the learning rate of epoch ``e`` of ``epochs`` to
    ``final + (initial - final)·(1 + cos(π·e/(epochs-1)))/2``: ``initial`` first, ``final`` last
    (fit re-reads the hyperparameters at each epoch)."""

    def __init__(self, initial, final, epochs):
        super().__init__()
        self.initial, self.final, self.epochs = initial, final, epochs

    def learning_rate(self, epoch):
        progress = epoch / (self.epochs - 1) if self.epochs > 1 else 0.0
        return self.final + (self.initial - self.final) * (1 + math.cos(math.pi * progress)) / 2

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = self.learning_rate(epoch)
