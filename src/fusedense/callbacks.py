"""Keras's training callbacks (``keras.callbacks``): ``Callback`` (the hooks), ``History``,
``EarlyStopping``, ``ModelCheckpoint``, ``ReduceLROnPlateau``, ``LearningRateScheduler``,
``CSVLogger``, ``TerminateOnNaN``, ``LambdaCallback``, ``ProgbarLogger`` and the schedule ``CosineDecay``.

``fit`` calls ``set_model(model)``, ``set_params({"epochs": …, "steps": …, "verbose": …})``, then
``on_train_begin``, ``on_epoch_begin(epoch)``, ``on_epoch_end(epoch, logs)`` (logs: {"loss": …,
"accuracy": …, "val_loss": …}) and ``on_train_end``. ``on_train_batch_begin(batch)`` /
``on_train_batch_end(batch, logs)`` are called only for callbacks that define them (a call per
batch costs time the fused step does not). A callback stops training by setting
``self.model.stop_training = True``.
"""
from __future__ import annotations

import csv
import math
import os
import warnings

import numpy as np

__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau", "LearningRateScheduler",
           "CSVLogger", "TerminateOnNaN", "LambdaCallback", "ProgbarLogger", "CosineDecay"]


class Callback:
    """Base class: override the hooks you need; ``self.model`` is the model being trained,
    ``self.params`` fit's settings."""

    model = None
    params = None

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass

    def wants_batches(self) -> bool:
        """Whether fit must call the batch hooks (they are overridden)."""
        return (type(self).on_train_batch_begin is not Callback.on_train_batch_begin
                or type(self).on_train_batch_end is not Callback.on_train_batch_end)


class History(Callback):
    """Records every epoch's logs: ``history.history["val_loss"][i]``, ``history.epoch`` (the
    epoch numbers, from ``initial_epoch``), ``history.params``; ``fit`` returns it."""

    def __init__(self):
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


def _monitor_mode(mode, monitor):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "acc" in monitor or monitor.endswith("auc") else "min"
    return mode


def _missing_monitor(who, monitor, logs):
    warnings.warn(f"{who}: monitor {monitor!r} is not among the logged values {sorted(logs or {})}; "
                  f"skipping", RuntimeWarning, stacklevel=3)


class EarlyStopping(Callback):
    """Stops training when ``monitor`` has not improved by more than ``min_delta`` for
    ``patience`` epochs; ``restore_best_weights`` puts back the best epoch's weights (Keras semantics).

    mode: 'min', 'max' or 'auto' (max for accuracy-like names, min otherwise).
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        self.monitor, self.mode = monitor, _monitor_mode(mode, monitor)
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
            _missing_monitor("EarlyStopping", self.monitor, logs)
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


class ModelCheckpoint(Callback):
    """Saves the model (``model.save``) or its weights (``model.save_weights``) after every epoch,
    or only when ``monitor`` improved (``save_best_only``). ``filepath`` may hold Keras's
    placeholders: ``"ckpt-{epoch:02d}-{val_loss:.3f}.keras"``."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        if save_freq != "epoch":
            raise NotImplementedError(f"save_freq: fusedense checkpoints once per epoch ('epoch'), got {save_freq!r}")
        self.filepath, self.monitor, self.verbose = os.fspath(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.mode = _monitor_mode(mode, monitor)
        self.best = initial_value_threshold
        if self.best is None:
            self.best = -math.inf if self.mode == "max" else math.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                _missing_monitor("ModelCheckpoint", self.monitor, logs)
                return
            if not (current > self.best if self.mode == "max" else current < self.best):
                if self.verbose:
                    print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to {current:.5f}, "
                      f"saving model to {path}")
            self.best = current
        elif self.verbose:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        (self.model.save_weights if self.save_weights_only else self.model.save)(path)


class ReduceLROnPlateau(Callback):
    """Multiplies the learning rate by ``factor`` when ``monitor`` has not improved by ``min_delta``
    for ``patience`` epochs, then waits ``cooldown`` epochs; never below ``min_lr`` (Keras's rules)."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0):
        if not 0 <= factor < 1:
            raise ValueError(f"factor: expected a number in [0, 1), got {factor!r}")
        self.monitor, self.factor, self.patience, self.verbose = monitor, float(factor), int(patience), verbose
        self.mode, self.min_delta = _monitor_mode(mode, monitor), float(min_delta)
        self.cooldown, self.min_lr = int(cooldown), float(min_lr)

    def on_train_begin(self, logs=None):
        self.best = -math.inf if self.mode == "max" else math.inf
        self.wait = self.cooldown_counter = 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        optimizer = self.model.optimizer
        logs["learning_rate"] = float(optimizer.learning_rate)
        current = logs.get(self.monitor)
        if current is None:
            _missing_monitor("ReduceLROnPlateau", self.monitor, logs)
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        better = current > self.best + self.min_delta if self.mode == "max" else current < self.best - self.min_delta
        if better:
            self.best, self.wait = current, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience and optimizer.learning_rate > self.min_lr:
                optimizer.learning_rate = max(optimizer.learning_rate * self.factor, self.min_lr)
                if self.verbose:
                    print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {optimizer.learning_rate}.")
                self.cooldown_counter, self.wait = self.cooldown, 0


class LearningRateScheduler(Callback):
    """Sets the learning rate at each epoch's start to ``schedule(epoch, lr)`` (or ``schedule(epoch)``)."""

    def __init__(self, schedule, verbose=0):
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        try:
            lr = self.schedule(epoch, float(optimizer.learning_rate))
        except TypeError:  # Keras accepts one-argument schedules too
            lr = self.schedule(epoch)
        if not isinstance(lr, (float, int, np.floating)) or not lr > 0:
            raise ValueError(f"LearningRateScheduler: the schedule returned {lr!r}; expected a positive float")
        optimizer.learning_rate = float(lr)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(lr)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class CSVLogger(Callback):
    """Writes one CSV row per epoch (``epoch`` then the logs' keys in sorted order, as Keras)."""

    def __init__(self, filename, separator=",", append=False):
        self.filename, self.separator, self.append = os.fspath(filename), separator, append

    def on_train_begin(self, logs=None):
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._writer, self._keys, self._header = None, None, not exists

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._writer is None:
            self._keys = sorted(logs)
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch", *self._keys], delimiter=self.separator)
            if self._header:
                self._writer.writeheader()
        self._writer.writerow({"epoch": epoch, **{k: logs.get(k, "NA") for k in self._keys}})
        self._file.flush()

    def on_train_end(self, logs=None):
        self._file.close()


class TerminateOnNaN(Callback):
    """Stops training at the first batch whose loss is NaN or infinite. fusedense never applies
    such a batch's update (the step is transactional), so the weights stay those before it; ``fit``
    ends normally instead of raising FloatingPointError."""


class LambdaCallback(Callback):
    """A callback from functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    _HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
              "on_train_batch_end")

    def __init__(self, **hooks):
        unknown = set(hooks) - set(self._HOOKS)
        if unknown:
            raise TypeError(f"LambdaCallback: unknown hook(s) {', '.join(sorted(unknown))}; expected {', '.join(self._HOOKS)}")
        for name, fn in hooks.items():
            if fn is not None:
                setattr(self, name, fn)

    def wants_batches(self) -> bool:
        return "on_train_batch_begin" in self.__dict__ or "on_train_batch_end" in self.__dict__


class ProgbarLogger(Callback):
    """The progress display of ``fit(verbose=1/2)`` (see fusedense.progbar); fit adds it when
    ``verbose`` asks for one, and passing one in ``callbacks`` shows it whatever ``verbose``."""

    def __init__(self, verbose=1):
        self.verbose = verbose


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
