"""The Keras-shaped front: ``Sequential`` of ``Dense`` layers with compile / fit / evaluate / predict.

    model = fd.Sequential([
        fd.Dense(128, activation="relu", input_shape=(input_dim,)),
        fd.Dense(64, activation="relu"),
        fd.Dense(num_classes, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=10, batch_size=32, validation_split=0.2)

Under it is one :class:`fusedense.MLP` (``model.network``): every minibatch is one fused
``mlp_train_step`` call. A model may start with ``Embedding`` + ``Flatten`` (token ids in,
e.g. a character language model); its network is then an :class:`fusedense.embedding.EmbeddingMLP`.

    model = fd.Sequential([fd.Embedding(27, 10, input_length=3), fd.Flatten(),
                           fd.Dense(200, activation="tanh"), fd.Dense(27)])

As in Keras, a training metric is measured on each batch's outputs before its update (the
fused step reports them, no second forward pass) and averaged over the epoch. Difference from
Keras: the default optimizer is Adam (Keras: RMSprop, which fusedense does not have).
"""
from __future__ import annotations

import time

import numpy as np

from . import optimizers as _optimizers
from .activations import get_activation
from .callbacks import Callback, History
from .losses import get_loss
from .metrics import get_metric
from .embedding import EmbeddingMLP
from .network import INITIALIZERS, MLP

__all__ = ["Dense", "Embedding", "Flatten", "Input", "Sequential"]


class Input:
    """``fd.Input(shape=(n_features,))`` as the first element of a Sequential (like keras.Input)."""

    def __init__(self, shape):
        shape = tuple(shape)
        if len(shape) != 1:
            raise ValueError(f"shape: expected (n_features,) — Dense networks take flat feature vectors, got {shape}")
        self.shape = shape


class Dense:
    """A fully connected layer ``activation(x @ kernel + bias)``; ``activation=None`` is linear.

    input_shape=(n,) or input_dim=n on the first layer fixes the input width (else fit infers it).
    """

    def __init__(self, units, activation=None, input_shape=None, input_dim=None,
                 kernel_initializer="glorot_uniform", alpha=None, name=None):
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"units: expected a positive integer, got {units!r}")
        if kernel_initializer not in INITIALIZERS:
            raise ValueError(f"kernel_initializer: unknown initializer {kernel_initializer!r}; "
                             f"expected one of {', '.join(INITIALIZERS)}")
        self.units = int(units)
        self.activation = get_activation(activation).name
        self.kernel_initializer = kernel_initializer
        self.alpha = alpha
        self.name = name
        if input_shape is not None:
            input_dim = Input(input_shape).shape[0]
        self.input_dim = None if input_dim is None else int(input_dim)
        self._views = None  # (kernel, bias) views into the model's flat buffer once built

    @property
    def kernel(self):
        return self._built_views()[0]

    @property
    def bias(self):
        return self._built_views()[1]

    def get_weights(self):
        return [a.copy() for a in self._built_views()]

    def _built_views(self):
        if self._views is None:
            raise ValueError(f"{self.name}: the layer has no weights until the model is built "
                             f"(give input_shape= or call fit)")
        return self._views


class Embedding:
    """Token ids (n, input_length) → their rows of a (vocab_size × dim) table; first layer only,
    followed by ``Flatten`` (the rows side by side feed the next Dense layer)."""

    def __init__(self, vocab_size, dim, input_length=None, name=None):
        for arg, value in (("vocab_size", vocab_size), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{arg}: expected a positive integer, got {value!r}")
        self.vocab_size, self.dim = int(vocab_size), int(dim)
        self.input_length = None if input_length is None else _positive_int("input_length", input_length)
        self.name = name
        self._views = None  # (table,) once built

    @property
    def embeddings(self):
        return self._built_views()[0]

    get_weights = Dense.get_weights
    _built_views = Dense._built_views


class Flatten:
    """Joins the Embedding's (input_length × dim) rows into one feature vector per sample."""

    def __init__(self, name=None):
        self.name = name


class Sequential:
    """A stack of Dense layers (see the module docstring). ``seed`` fixes initial weights and shuffling."""

    def __init__(self, layers=None, name=None, seed=None, dtype="float32", backend=None):
        self.name = name or "sequential"
        self.seed = seed
        self.dtype = np.dtype(dtype)
        self.backend = backend
        self.layers = []
        self.embedding = None  # the Embedding layer when the model starts with one
        self.input_dim = None
        self.network = None
        self.loss = None
        self.metrics = []
        self.stop_training = False
        self._rng = np.random.default_rng(seed)
        for layer in layers or []:
            self.add(layer)

    # --- building ----------------------------------------------------------------------------

    def add(self, layer):
        if self.network is not None:
            raise ValueError("layer: cannot add layers to a model that is already built")
        if isinstance(layer, Input):
            if self.layers:
                raise ValueError("layer: fd.Input must come before every Dense layer")
            self.input_dim = layer.shape[0]
            return
        previous = self.layers[-1] if self.layers else None
        if isinstance(layer, Embedding):
            if self.layers or self.input_dim is not None:
                raise ValueError("layer: fd.Embedding must be the first layer")
            self.embedding, self.input_dim = layer, layer.input_length
        elif isinstance(layer, Flatten):
            if not isinstance(previous, Embedding):
                raise ValueError("layer: fd.Flatten goes right after fd.Embedding (Dense layers take flat inputs)")
        elif isinstance(layer, Dense):
            if isinstance(previous, Embedding):
                raise ValueError("layer: put fd.Flatten() between fd.Embedding and the first fd.Dense")
            if not self.layers and layer.input_dim is not None:
                self.input_dim = layer.input_dim
        else:
            raise TypeError(f"layer: expected fd.Dense, fd.Embedding, fd.Flatten or fd.Input, got {type(layer).__name__}")
        if layer.name is None:
            layer.name = f"{type(layer).__name__.lower()}_{len(self.layers)}"
        self.layers.append(layer)  # weights are created once all layers are known (compile/fit/predict)

    def build(self, input_dim=None):
        """Creates the weights for ``input_dim`` inputs (done automatically by compile/fit)."""
        if self.network is not None:
            return
        input_dim = input_dim or self.input_dim
        if input_dim is None:
            raise ValueError("input_shape: the model does not know its input width yet; give "
                             "input_shape=(n,) to the first Dense layer, or call fit first")
        dense = self._dense_layers()
        self.input_dim = int(input_dim)
        config = dict(alphas=[layer.alpha for layer in dense], dtype=self.dtype,
                      init=[layer.kernel_initializer for layer in dense], random_state=self._rng,
                      backend=self.backend)
        units, activations = [layer.units for layer in dense], [layer.activation for layer in dense]
        if self.embedding is None:
            self.network = MLP([self.input_dim] + units, activations, **config)
        else:
            self.network = EmbeddingMLP(self.embedding.vocab_size, self.embedding.dim, self.input_dim, units, activations,
                                        **config)
            self.embedding._views = (self.network.embeddings,)
        for layer, views in zip(dense, self.network.weights):
            layer._views = views
        if self.loss is not None:
            self._attach_optimizer()

    def _dense_layers(self):
        dense = [layer for layer in self.layers if isinstance(layer, Dense)]
        if not dense:
            raise ValueError("layers: a Sequential model needs at least one Dense layer")
        return dense

    def _build_for(self, x):
        """The network, built for the width of ``x`` if it was not built yet."""
        if self.network is None and self.input_dim is None:
            if np.ndim(x) != 2:
                raise ValueError(f"x: expected a 2-D array (n_samples, n_features), got shape {np.shape(x)}")
            self.build(np.shape(x)[1])
        return self._built("x")

    @property
    def built(self) -> bool:
        return self.network is not None

    # --- training configuration ----------------------------------------------------------------

    def compile(self, optimizer="adam", loss=None, metrics=None):
        """optimizer: 'adam', 'sgd', 'adamw' or a fusedense.optimizers object; loss: a Keras loss
        name; metrics: e.g. ['accuracy']."""
        if loss is None:
            raise ValueError("loss: compile needs a loss, e.g. loss='sparse_categorical_crossentropy'")
        self._dense_layers()
        self.optimizer = _optimizers.get(optimizer)
        self.loss = get_loss(loss, self.layers[-1].activation)
        if isinstance(metrics, str):
            metrics = [metrics]
        self.metrics = [(name, get_metric(name, self.loss, self.layers[-1].units)) for name in metrics or []]
        self._compile_config = {"loss": loss, "metrics": list(metrics or [])}
        if self.network is not None:
            self._attach_optimizer()
        elif self.input_dim is not None:
            self.build()

    def _attach_optimizer(self):
        self.network.set_optimizer(self.optimizer)

    @property
    def _from_logits(self) -> bool:
        return self.layers[-1].activation == "identity"

    def _require_compiled(self, what):
        if self.loss is None:
            raise RuntimeError(f"{what}: compile the model first (model.compile(optimizer=..., loss=...))")

    # --- fit / evaluate / predict ----------------------------------------------------------------

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0):
        """Trains for ``epochs`` passes over ``(x, y)``; returns a History (``.history`` dict)."""
        self._require_compiled("fit")
        batch_size = _positive_int("batch_size", 32 if batch_size is None else batch_size)
        epochs = _positive_int("epochs", epochs, allow_zero=True)
        net = self._build_for(x)
        x = net.as_inputs(x, "x")
        y = net.as_targets(y, x.shape[0], self.loss, "y")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) < 2:
                raise ValueError("validation_data: expected a tuple (x_val, y_val)")
            x_val = net.as_inputs(validation_data[0], "validation_data[0]")
            y_val = net.as_targets(validation_data[1], x_val.shape[0], self.loss, "validation_data[1]")
        elif validation_split:
            if not 0.0 < float(validation_split) < 1.0:
                raise ValueError(f"validation_split: expected a fraction in (0, 1), got {validation_split!r}")
            split_at = int(x.shape[0] * (1.0 - float(validation_split)))  # Keras: the LAST fraction
            if split_at < 1 or split_at == x.shape[0]:
                raise ValueError(f"validation_split: {validation_split} of {x.shape[0]} samples leaves "
                                 f"an empty training or validation set")
            x, x_val, y, y_val = x[:split_at], x[split_at:], y[:split_at], y[split_at:]
        else:
            x_val = y_val = None

        history = History()
        callbacks = [history] + list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks: expected fd.callbacks.Callback objects, got {type(cb).__name__}")
            cb.set_model(self)
        verbose = 1 if verbose == "auto" else int(verbose)
        self.stop_training = False
        for cb in callbacks:
            cb.on_train_begin()
        n = x.shape[0]
        n_steps = -(-n // batch_size)
        # the training metrics read each batch's outputs from its own training step
        outputs = np.empty((n, net.n_outputs), net.dtype) if self.metrics else None
        for epoch in range(initial_epoch, epochs):
            for cb in callbacks:
                cb.on_epoch_begin(epoch)
            start = time.perf_counter()
            net.refresh_hyperparameters()  # a callback may have changed the learning rate
            order = self._rng.permutation(n) if shuffle else None
            try:
                logs = {"loss": net.train_epoch(x, y, self.loss.id, batch_size, order, outputs)}
            except FloatingPointError as exc:
                raise FloatingPointError(f"epoch {epoch + 1}/{epochs}, {exc}") from None
            if self.metrics:  # outputs[i] belongs to the i-th row visited
                logs.update(self._metric_values(y if order is None else y[order], outputs))
            if x_val is not None:
                logs.update({f"val_{k}": v for k, v in self._loss_and_metrics(x_val, y_val).items()})
            elapsed = time.perf_counter() - start
            if verbose:
                print(f"Epoch {epoch + 1}/{epochs}\n{n_steps}/{n_steps} - {elapsed:.1f}s "
                      f"{elapsed / n_steps * 1e3:.2f}ms/step - " + _format_logs(logs), flush=True)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        for cb in callbacks:
            cb.on_train_end()
        self.history = history
        return history

    def _metric_values(self, y, outputs):
        return {name: fn(outputs, y, self._from_logits) for name, fn in self.metrics}

    def _loss_and_metrics(self, x, y):
        outputs = self.network.predict(x)
        return {"loss": self.loss.value(outputs, y, self._from_logits, self.network.engine),
                **self._metric_values(y, outputs)}

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False):
        """The loss (and metrics) on ``(x, y)``: a float, or [loss, metric, ...] when metrics were compiled."""
        self._require_compiled("evaluate")
        x = self._build_for(x).as_inputs(x, "x")
        y = self.network.as_targets(y, x.shape[0], self.loss, "y")
        results = self._loss_and_metrics(x, y)
        if (1 if verbose == "auto" else int(verbose)):
            print(_format_logs(results), flush=True)
        if return_dict:
            return results
        values = list(results.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose=0):
        """The model's outputs (e.g. class probabilities) for ``x``: one fused call per batch."""
        return self._build_for(x).predict(x, batch_size=batch_size)

    __call__ = predict

    def generate(self, n=1, max_len=30, temperature=1.0, seed=None, boundary=0):
        """Samples ``n`` token sequences (a model that starts with fd.Embedding and predicts the next
        token); see :meth:`fusedense.embedding.EmbeddingMLP.generate`."""
        net = self._built("generate")
        if not isinstance(net, EmbeddingMLP):
            raise TypeError("generate: only a model that starts with fd.Embedding generates token sequences")
        return net.generate(n, max_len, temperature, seed, boundary)

    # --- weights, summary, saving ----------------------------------------------------------------

    def _built(self, what):
        if self.network is None and self.input_dim is not None:
            self.build()
        if self.network is None:
            raise ValueError(f"{what}: the model has no weights yet; give input_shape= to the first "
                             f"layer or call fit first")
        return self.network

    def get_weights(self):
        return self._built("get_weights").get_weights()

    def set_weights(self, weights):
        self._built("set_weights").set_weights(weights)

    def count_params(self) -> int:
        return self._built("count_params").n_params

    def summary(self, print_fn=print):
        """Prints the layers with their output shapes and parameter counts (like Keras)."""
        net = self._built("summary")
        rows = [(f"{e.name} (Embedding)", f"(None, {self.input_dim}, {e.dim})", f"{e.vocab_size * e.dim:,}"),
                (f"{self.layers[1].name} (Flatten)", f"(None, {self.input_dim * e.dim})", "0")
                ] if (e := self.embedding) is not None else []
        rows += [(f"{layer.name} (Dense, {layer.activation})", f"(None, {layer.units})",
                  f"{fan_in * fan_out + fan_out:,}")
                 for layer, (_, fan_in, fan_out, _) in zip(self._dense_layers(), net.layout)]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(_SUMMARY_HEADER)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
        rule = "-" * len(line(_SUMMARY_HEADER))
        print_fn(f'Model: "{self.name}" (backend {net.backend}, {net.dtype})')
        for text in (rule, line(_SUMMARY_HEADER), rule, *(line(r) for r in rows), rule):
            print_fn(text)
        print_fn(f"Total params: {net.n_params:,} ({net.n_params * net.dtype.itemsize / 1024:.1f} KB)")

    # ``save`` (architecture, weights and compile settings in one file) comes from fusedense.io,
    # which builds on this class and so cannot be imported by it

    def compile_config(self):
        """What compile() was called with (JSON-serialisable), or None."""
        if self.loss is None:
            return None
        return {**self._compile_config, "optimizer": [type(self.optimizer).__name__, self.optimizer.get_config()]}


_SUMMARY_HEADER = ("Layer (type)", "Output Shape", "Param #")


def _format_logs(logs):
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


def _positive_int(name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if allow_zero else 1):
        raise ValueError(f"{name}: expected a {'non-negative' if allow_zero else 'positive'} integer, got {value!r}")
    return int(value)
