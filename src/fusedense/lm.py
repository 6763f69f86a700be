"""A character-level MLP language model of first names (Bengio et al. 2003), built and trained.

    >>> model, data, result = train(LMConfig(epochs=5, hidden=(200,)))
    >>> model.evaluate(data.x_test, data.y_test, verbose=0)    # nats per character

``Embedding → Flatten → Dense(hidden, tanh) … → Dense(27)`` on ``fd.datasets.load_names_lm``
(names split by name into train / validation / test), trained with Adam(W) or SGD under a cosine
learning-rate decay. ``fusedense lm`` (:mod:`fusedense.cli.lm`) is the command over this module;
docs/lm_sweep.md has the configurations behind the defaults.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from . import datasets, losses, optimizers
from .callbacks import CosineDecay, EarlyStopping
from .layers import Dense, Dropout, Embedding, Flatten
from .models import Sequential

__all__ = ["InvalidSetting", "LMConfig", "build_model", "train"]


class InvalidSetting(ValueError):
    """An ``LMConfig`` field out of range; ``setting`` names the field, ``requirement`` what it must be."""

    def __init__(self, setting, requirement):
        super().__init__(f"{setting}: {requirement}")
        self.setting, self.requirement = setting, requirement


@dataclasses.dataclass
class LMConfig:
    """The model, its optimizer and the training run; None means the optimizer's default."""

    context: int = 3  # characters of context
    embedding: int = 32  # embedding width per character
    embedding_std: float = 3.0  # the initial embeddings are drawn from N(0, std²)
    hidden: tuple = (500,)  # hidden layer widths
    activation: str = "tanh"  # of the hidden layers
    dropout: float = 0.0  # rate at which training drops each hidden layer's outputs (Dropout before the next Dense)
    input_dropout: float = 0.0  # rate at which training drops the embeddings feeding the first hidden layer
    optimizer: str = "adam"  # or "sgd" (momentum 0.9)
    lr: float | None = None  # initial learning rate: adam 1e-3, sgd 0.1
    weight_decay: float | None = None  # on every parameter: decoupled with adam (AdamW, 0.02), L2 with sgd (0)
    min_lr: float | None = None  # the last epoch's rate (cosine decay from lr): lr / 100
    epochs: int = 20
    batch_size: int = 64
    patience: int | None = None  # early stopping on the validation loss, best weights kept; None: all epochs
    seed: int = 0  # data split, initial weights, shuffling
    backend: str | None = None

    @property
    def initial_learning_rate(self) -> float:
        return self.lr if self.lr is not None else {"adam": 1e-3, "sgd": 0.1}[self.optimizer]

    @property
    def final_learning_rate(self) -> float:
        """A hundredth of the first: a tenth ended worse (docs/performance-notes.md)."""
        return self.initial_learning_rate / 100 if self.min_lr is None else self.min_lr

    @property
    def decay(self) -> float:
        return self.weight_decay if self.weight_decay is not None else {"adam": 0.02, "sgd": 0.0}[self.optimizer]

    def check(self) -> "LMConfig":
        """Raises InvalidSetting naming the first field out of range; returns the config."""
        if self.optimizer not in ("adam", "sgd"):
            raise InvalidSetting("optimizer", f"must be 'adam' or 'sgd', got {self.optimizer!r}")
        for name in ("context", "embedding", "epochs", "batch_size", "patience"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InvalidSetting(name, "must be >= 1")
        if not self.hidden or min(self.hidden) < 1:
            raise InvalidSetting("hidden", "must be one or more widths >= 1")
        if not 0 < self.final_learning_rate <= self.initial_learning_rate:
            raise InvalidSetting("min_lr", "must be in (0, lr]")
        if not self.embedding_std > 0:
            raise InvalidSetting("embedding_std", "must be > 0")
        if self.decay < 0:
            raise InvalidSetting("weight_decay", "must be >= 0")
        for name in ("dropout", "input_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise InvalidSetting(name, "must be in [0, 1)")
        return self


def build_model(config: LMConfig) -> Sequential:
    """The compiled model with its initial weights (seeded by ``config.seed``)."""
    vocab = len(datasets.NAMES_LM_VOCAB)
    layers = [Embedding(vocab, config.embedding, input_length=config.context), Flatten()]
    layers += [Dropout(config.input_dropout)] if config.input_dropout else []
    for width in config.hidden:  # Dropout between Dense layers (seeded by the model's seed): see docs/lm_sweep.md
        layers += [Dense(width, activation=config.activation)] + ([Dropout(config.dropout)] if config.dropout else [])
    layers += [Dense(vocab)]
    model = Sequential(layers, name="names_lm", seed=config.seed, backend=config.backend)
    lr, decay = config.initial_learning_rate, config.decay
    optimizer = optimizers.AdamW(learning_rate=lr, weight_decay=decay) if config.optimizer == "adam" \
        else optimizers.SGD(learning_rate=lr, momentum=0.9, weight_decay=decay)
    model.compile(optimizer=optimizer, loss=losses.SparseCategoricalCrossentropy(from_logits=True))  # builds
    # A normal law as in Bengio et al. and PyTorch, not Keras' uniform(±0.05): tiny embeddings
    # leave the tanh layer in its linear range, where training crawls (docs/performance-notes.md).
    table = model.layers[0].embeddings
    table[...] = config.embedding_std * np.random.default_rng(config.seed).standard_normal(table.shape)
    return model


def train(config: LMConfig, log=print, verbose=1):
    """Loads the split, builds and trains the model; returns ``(model, data, result)``, result: the
    per-epoch history, training seconds and the train and validation losses (nats/char; the test
    loss is left to the caller, so that nothing tuned on ``train`` ever sees it). ``log`` receives
    the set-up lines, ``verbose`` goes to ``fit``."""
    config.check()
    data = datasets.load_names_lm(context=config.context, seed=config.seed)
    model = build_model(config)
    lr, min_lr = config.initial_learning_rate, config.final_learning_rate
    log(f"names: {len(data.names_train)} train / {len(data.names_val)} validation / {len(data.names_test)} test "
        f"({len(data.y_train)} / {len(data.y_val)} / {len(data.y_test)} characters)")
    dropout = "".join(f", {what} dropout {rate:g}" for what, rate in (("input", config.input_dropout),
                                                                         ("hidden", config.dropout)) if rate)
    log(f"model: context {config.context} × embedding {config.embedding} → {' → '.join(map(str, config.hidden))} "
        f"{config.activation} → {len(data.vocab)}{dropout}, {model.count_params():,} parameters, "
        f"{type(model.optimizer).__name__} lr {lr:g} → {min_lr:g} (cosine), weight decay {config.decay:g}, "
        f"batch {config.batch_size}, backend {model.network.backend}")
    callbacks = [CosineDecay(lr, min_lr, config.epochs)]
    if config.patience is not None:
        callbacks.append(EarlyStopping(patience=config.patience, restore_best_weights=True, verbose=verbose))
    start = time.perf_counter()
    history = model.fit(data.x_train, data.y_train, batch_size=config.batch_size, epochs=config.epochs,
                        validation_data=(data.x_val, data.y_val), callbacks=callbacks, verbose=verbose)
    seconds = time.perf_counter() - start
    losses = {part: model.evaluate(getattr(data, f"x_{part}"), getattr(data, f"y_{part}"), verbose=0)
              for part in ("train", "val")}
    return model, data, {"history": history.history, "seconds": seconds, "losses": losses}
