"""The Keras-shaped front: ``Sequential`` with compile / fit / evaluate / predict, over the layers
of :mod:`fusedense.layers` (Keras 3's API and semantics; ``import fusedense as keras`` works for
the models fusedense can fuse).

    import fusedense as keras
    model = keras.Sequential([
        keras.Input(shape=(input_dim,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(num_classes, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=10, batch_size=32, validation_split=0.2)

Under it is one :class:`fusedense.MLP` (``model.network``): every minibatch is one fused
``mlp_train_step`` call. A model may start with ``Embedding`` + ``Flatten`` (token ids in,
e.g. a character language model); its network is then an :class:`fusedense.embedding.EmbeddingMLP`.

As in Keras, a training metric is measured on each batch's outputs before its update (the
fused step reports them, no second forward pass) and averaged over the epoch; the loss
includes the kernel regularizers' penalties; ``sample_weight`` / ``class_weight`` scale each
row's loss (the mean still over the batch's rows) and weight the ``weighted_metrics``. How each loss is
trained (fused on logits, or on Keras's clipped probabilities) is described in fusedense.losses.
Dropout layers become the dropout rate of the next Dense layer's input in the fused network
(fusedense.layers.Dropout): the engines draw the mask inside the training step.
Differences from Keras: the default optimizer is Adam (Keras: RMSprop, which fusedense does not
have); ``predict`` prints nothing unless verbose=1 is asked for; a Dropout after the last Dense
layer, or with a loss on the outputs (see _training_path), does not train.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from . import abi
from . import losses as _losses
from . import optimizers as _optimizers
from .callbacks import Callback, History, ProgbarLogger, TerminateOnNaN
from .embedding import EmbeddingMLP
from .layers import Activation, Dense, Dropout, Embedding, EmbeddingBag, Flatten, InputLayer, unique_name
from .metrics import get_metric
from .metrics import value as metric_value
from .network import MLP, write_weights
from .progbar import Progbar, format_logs, is_interactive

__all__ = ["Sequential"]

_IGNORED_COMPILE_ARGS = ("run_eagerly", "steps_per_execution", "jit_compile", "auto_scale_loss")


class Sequential:
    """A stack of layers (see the module docstring). ``seed`` fixes initial weights and shuffling."""

    def __init__(self, layers=None, name=None, seed=None, dtype="float32", backend=None, trainable=True):
        self.name = name or unique_name("sequential")
        self.seed = seed
        self.dtype = np.dtype(dtype)
        self.backend = backend
        self.layers = []  # as Keras 3's model.layers: without the InputLayer
        self.embedding = None  # the Embedding layer when the model starts with one
        self.input_dim = None
        self.network = None
        self.loss = None
        self.metrics = []
        self.optimizer = None
        self.stop_training = False
        self.history = None
        # without a seed, one from NumPy's global generator (which fd.utils.set_random_seed fixes)
        self._seed = int(np.random.randint(2**31)) if seed is None else seed
        self._rng = np.random.default_rng(self._seed)
        for layer in layers or []:
            self.add(layer)

    # --- building ----------------------------------------------------------------------------

    def add(self, layer):
        if self.network is not None:
            raise ValueError("layer: cannot add layers to a model that is already built")
        if isinstance(layer, InputLayer):
            if self.layers or self.input_dim is not None:
                raise ValueError("layer: fd.Input must come before every other layer")
            self.input_dim = layer.shape[0]
            return
        previous = next((p for p in reversed(self.layers) if not isinstance(p, Dropout)), None)
        if isinstance(layer, Embedding):
            if self.layers or self.input_dim is not None:
                raise ValueError("layer: fd.layers.Embedding must be the first layer")
            self.embedding, self.input_dim = layer, layer.input_length
        elif isinstance(layer, Flatten):
            if previous is not None and not isinstance(previous, Embedding):
                raise ValueError("layer: fd.layers.Flatten goes right after fd.layers.Embedding "
                                 "(Dense layers take flat inputs)")
        elif isinstance(layer, EmbeddingBag):
            if self.layers or self.input_dim not in (None, layer.input_dim):
                raise ValueError("layer: fd.layers.EmbeddingBag must be the first layer (after an fd.Input of "
                                 "its input_dim, if any)")
            self.input_dim = layer.input_dim
        elif isinstance(layer, Dense):
            if isinstance(previous, Embedding):
                raise ValueError("layer: put fd.layers.Flatten() between fd.layers.Embedding and the first Dense layer")
            if not self._dense_layers(required=False) and layer.input_dim is not None:
                self.input_dim = layer.input_dim
        elif isinstance(layer, Activation):
            if not isinstance(previous, Dense) or previous.activation != "identity" \
                    or isinstance(self.layers[-1], Activation):
                raise ValueError("layer: fd.layers.Activation must follow a Dense layer without an activation "
                                 "(it becomes that layer's activation in the fused network)")
        elif isinstance(layer, Dropout):
            pass  # it drops the input of the next Dense layer (see _dropout)
        else:
            raise TypeError(f"layer: expected a layer of fusedense.layers (Dense, Dropout, Activation, Embedding, "
                            f"Flatten, Input), got {type(layer).__name__}")
        self.layers.append(layer)  # weights are created once all layers are known (compile/fit/predict)

    def pop(self):
        if self.network is not None:
            raise ValueError("pop: cannot remove layers from a model that is already built")
        return self.layers.pop()

    def _dense_layers(self, required=True):
        dense = [layer for layer in self.layers if isinstance(layer, Dense)]
        if required and not dense:
            raise ValueError("layers: a Sequential model needs at least one Dense layer")
        return dense

    def _fused_activations(self):
        """Each Dense layer's activation in the fused network (an Activation layer after a linear
        Dense layer becomes its activation)."""
        activations = []
        for layer in self.layers:
            if isinstance(layer, Dense):
                activations.append(layer.activation)
            elif isinstance(layer, Activation):
                activations[-1] = layer.activation
        return activations

    @property
    def output_activation(self) -> str:
        return self._fused_activations()[-1]

    def _dropout(self):
        """(rates, seeds): per Dense layer, the dropout rate of its input in the fused network and
        the seed of its mask. Consecutive Dropout layers drop an element when any of them does:
        one rate 1 − Π(1 − rate), the same law. A Dropout without a seed gets one from the
        model's seed (drawn from NumPy's global generator when the model has none), never from the weights' or the shuffling's
        generator: adding a Dropout changes neither."""
        rates, seeds, rate, seed = [], [], 0.0, None
        for layer in self.layers:
            if isinstance(layer, Dropout) and layer.rate > 0:
                rate = layer.rate if rate == 0 else 1.0 - (1.0 - rate) * (1.0 - layer.rate)  # (one: exactly its rate)
                seed = layer.seed if seed is None else seed
            elif isinstance(layer, Dense):
                if rate > 0 and seed is None:
                    seed = int(np.random.default_rng((int(self._seed), len(rates))).integers(0, 2**63 - 1))
                rates.append(rate)
                seeds.append(0 if rate == 0 else int(seed))
                rate, seed = 0.0, None
        return rates, seeds

    def build(self, input_shape=None):
        """Creates the weights for ``input_shape`` = n or (None, n) inputs (compile/fit do it)."""
        if self.network is not None:
            return
        input_dim = input_shape[-1] if isinstance(input_shape, (tuple, list)) else input_shape
        input_dim = input_dim or self.input_dim
        if input_dim is None:
            raise ValueError("input_shape: the model does not know its input width yet; start it with "
                             "fd.Input(shape=(n,)), give input_shape=(n,) to the first Dense layer, or call fit")
        dense = self._dense_layers()
        self.input_dim = int(input_dim)
        # kernel_regularizer → the layer record's kernel penalty (l1, l2): the fused step adds it
        # to the loss and to dW (never to the bias), as Keras adds the regularization losses
        rates, seeds = self._dropout()
        config = dict(alphas=[layer.alpha for layer in dense], dtype=self.dtype, random_state=self._rng,
                      backend=self.backend, penalties=[(reg.l1, reg.l2) if reg else (0.0, 0.0) for reg in
                                                       (layer.kernel_regularizer for layer in dense)],
                      dropout=rates, dropout_seeds=seeds)
        units, activations = [layer.units for layer in dense], self._fused_activations()
        if self.embedding is None:
            net = MLP([self.input_dim] + units, activations, **config)
        else:
            net = EmbeddingMLP(self.embedding.vocab_size, self.embedding.dim, self.input_dim, units, activations,
                               **config)
            self.embedding._views = (net.embeddings,)
            net.embeddings[...] = self.embedding.embeddings_initializer(net.embeddings.shape, self._rng)
        for layer, (W, b) in zip(dense, net.weights):
            layer._views = (W, b)
            W[...] = layer.kernel_initializer(W.shape, self._rng)
            b[...] = layer.bias_initializer(b.shape, self._rng) if layer.use_bias else 0
        self.network = net
        self._unbiased = [layer.bias for layer in dense if not layer.use_bias]
        if self.loss is not None:
            self._attach_optimizer()

    def _inputs(self, x, name="x"):
        """``x`` as the network takes it (a model starting with EmbeddingBag: its bags), built
        for the width of ``x`` if the model was not built yet."""
        first = self.layers[0] if self.layers else None
        if isinstance(first, EmbeddingBag):
            x = first.bags(x, self.dtype, name)
        return self._build_for(x).as_inputs(x, name)

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

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, weighted_metrics=None,
                **kwargs):
        """optimizer: 'rmsprop' (Keras's default), 'adam', 'sgd', 'adamw' or a fusedense.optimizers
        object; loss: a Keras loss
        name, function, config or fusedense.losses object; metrics: e.g. ['accuracy']."""
        unknown = set(kwargs) - set(_IGNORED_COMPILE_ARGS)
        if unknown:
            raise TypeError(f"compile: unexpected keyword argument(s) {', '.join(sorted(unknown))}")
        if loss is None:
            raise ValueError("loss: compile needs a loss, e.g. loss='sparse_categorical_crossentropy'")
        if loss_weights is not None:
            raise NotImplementedError("loss_weights: a Sequential model has one output and one loss")
        self._dense_layers()
        loss_object = _losses.get(loss)
        self._loss_path = _training_path(loss_object, self.output_activation)
        self.optimizer = _optimizers.get(optimizer)
        self.loss_object, self.loss = loss_object, loss_object.spec
        self._from_logits = loss_object.from_logits and self.loss.id != abi.LOSS_MSE
        n_out = self._dense_layers()[-1].units
        # Keras: ``metrics`` ignore sample weights, ``weighted_metrics`` apply them (Σ w·m / Σ w)
        self.metrics = [(*get_metric(m, self.loss, n_out), False) for m in _as_list(metrics)]
        taken = {name for name, _, _ in self.metrics}
        for m in _as_list(weighted_metrics):
            name, fn = get_metric(m, self.loss, n_out)
            self.metrics.append((f"weighted_{name}" if name in taken else name, fn, True))
        self._compile_config = {"loss": _losses.serialize(loss_object),
                                "metrics": [name for name, _, weighted in self.metrics if not weighted],
                                "weighted_metrics": [name for name, _, weighted in self.metrics if weighted]}
        if self.network is not None:
            self._attach_optimizer()
        elif self.input_dim is not None:
            self.build()

    def _attach_optimizer(self):
        self.network.set_optimizer(self.optimizer)

    @property
    def metrics_names(self):
        return ["loss"] + [name for name, _, _ in self.metrics]

    def _require_compiled(self, what):
        if self.loss is None:
            raise RuntimeError(f"{what}: compile the model first (model.compile(optimizer=..., loss=...))")

    def _regularized(self):
        return [(layer, layer.kernel_regularizer) for layer in self._dense_layers() if layer.kernel_regularizer]

    def _penalty(self) -> float:
        return sum(reg.penalty(layer.kernel) for layer, reg in self._regularized())

    # --- fit / evaluate / predict ----------------------------------------------------------------

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None, sample_weight=None,
            initial_epoch=0, steps_per_epoch=None, validation_steps=None, validation_batch_size=None,
            validation_freq=1):
        """Trains for ``epochs`` passes over ``(x, y)`` (Keras's arguments and meanings); returns
        the History (``.history`` dict, ``.epoch``, ``.params``)."""
        self._require_compiled("fit")
        batch_size = _positive_int("batch_size", 32 if batch_size is None else batch_size)
        epochs = _positive_int("epochs", epochs, allow_zero=True)
        initial_epoch = _positive_int("initial_epoch", initial_epoch, allow_zero=True)
        self._check_dropout()
        x = self._inputs(x, "x")
        net = self.network
        y = net.as_targets(y, x.shape[0], self.loss, "y")
        weights = self._sample_weights(y, x.shape[0], sample_weight, class_weight, "sample_weight")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data: expected a tuple (x_val, y_val) or (x_val, y_val, val_sample_weight)")
            x_val = self._inputs(validation_data[0], "validation_data[0]")
            y_val = net.as_targets(validation_data[1], x_val.shape[0], self.loss, "validation_data[1]")
            w_val = self._sample_weights(y_val, x_val.shape[0], validation_data[2] if len(validation_data) == 3
                                         else None, None, "validation_data[2]")
        elif validation_split:
            if not 0.0 < float(validation_split) < 1.0:
                raise ValueError(f"validation_split: expected a fraction in (0, 1), got {validation_split!r}")
            split_at = int(x.shape[0] * (1.0 - float(validation_split)))  # Keras: the LAST fraction
            if split_at < 1 or split_at == x.shape[0]:
                raise ValueError(f"validation_split: {validation_split} of {x.shape[0]} samples leaves "
                                 f"an empty training or validation set")
            x, x_val, y, y_val = x[:split_at], x[split_at:], y[:split_at], y[split_at:]
            weights, w_val = (None, None) if weights is None else (weights[:split_at], weights[split_at:])
        else:
            x_val = y_val = w_val = None
        self._check_embedding_training("fit", weights)
        validate = _validation_schedule(validation_freq)

        n = x.shape[0]
        steps = -(-n // batch_size) if steps_per_epoch is None else _positive_int("steps_per_epoch", steps_per_epoch)
        verbose = 1 if verbose == "auto" else int(verbose)
        history = History()
        callbacks = list(callbacks or [])
        if any(isinstance(cb, ProgbarLogger) for cb in callbacks) and not verbose:
            verbose = 1
        # History last, as in Keras: it records what the other callbacks add to the logs (e.g. learning_rate)
        callbacks = [cb for cb in callbacks if not isinstance(cb, ProgbarLogger)] + [history]
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks: expected fd.callbacks.Callback objects, got {type(cb).__name__}")
            cb.set_model(self)
            cb.set_params({"verbose": verbose, "epochs": epochs, "steps": steps})
        history.params = {"verbose": verbose, "epochs": epochs, "steps": steps}
        batch_callbacks = [cb for cb in callbacks if cb.wants_batches()]
        stop_on_nan = any(isinstance(cb, TerminateOnNaN) for cb in callbacks)
        live = verbose == 1 and is_interactive()
        self.stop_training = False
        for cb in callbacks:
            cb.on_train_begin()
        batches = _batch_stream(n, batch_size, shuffle, self._rng)
        # nothing to do between the steps of an epoch: the engine runs the whole epoch in one call
        epoch_call = (steps_per_epoch is None and not batch_callbacks and not stop_on_nan and not live
                      and weights is None and self._loss_path == "fused" and not self._unbiased
                      and type(net)._train_kernel is MLP._train_kernel and isinstance(x, np.ndarray))
        # each batch's outputs from its own training step (for the training metrics), row i for the i-th row visited
        track = bool(self.metrics)
        outputs = np.empty((steps * batch_size, net.n_outputs), net.dtype) if track else None
        visited = np.empty(steps * batch_size, np.int64) if track else None
        for epoch in range(initial_epoch, epochs):
            for cb in callbacks:
                cb.on_epoch_begin(epoch)
            if verbose:
                print(f"Epoch {epoch + 1}/{epochs}", flush=True)
            bar = Progbar(steps, live) if verbose else None
            net.refresh_hyperparameters()  # a callback may have changed the learning rate
            running = _Running(self, y, weights, outputs, visited)
            try:
                if epoch_call:
                    self._train_epoch(net, x, y, batches, steps, batch_size, running)
                for step in range(0 if epoch_call else steps):
                    rows = next(batches)
                    for cb in batch_callbacks:
                        cb.on_train_batch_begin(step)
                    running.add(self._train_rows(net, x, y, weights, rows, batch_size, running.next_outputs(rows)), rows)
                    if batch_callbacks:
                        for cb in batch_callbacks:
                            cb.on_train_batch_end(step, running.logs())
                    if bar is not None and bar.due(step + 1):
                        bar.update(step + 1, running.logs)
                    if self.stop_training:
                        break
            except FloatingPointError as exc:
                if epoch_call:  # the message names the batch already
                    raise FloatingPointError(f"epoch {epoch + 1}/{epochs}, {exc}") from None
                if not stop_on_nan:
                    raise FloatingPointError(f"epoch {epoch + 1}/{epochs}, batch {step + 1} of {steps}: {exc}") from None
                print(f"Batch {step + 1}: Invalid loss, terminating training", flush=True)
                self.stop_training = True
                if not running.rows:
                    break
            logs = running.logs()
            if x_val is not None and validate(epoch):
                logs.update({f"val_{k}": v for k, v in self._loss_and_metrics(x_val, y_val, w_val).items()})
            if bar is not None:
                bar.finish(logs)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        for cb in callbacks:
            cb.on_train_end()
        self.history = history
        return history

    def _check_embedding_training(self, what, weights):
        if (weights is not None or self._loss_path != "fused") and isinstance(self.network, EmbeddingMLP):
            raise NotImplementedError(f"{what}: an Embedding model trains only with the fused sparse cross-entropy "
                                      "on logits (from_logits=True) and no sample/class weights: "
                                      "the engines' embedding_train_step takes neither")

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One optimizer step on the batch ``(x, y)`` (Keras's ``train_on_batch``): returns the
        batch's loss, and metrics on its outputs before the step, formatted as ``evaluate``'s."""
        self._require_compiled("train_on_batch")
        self._check_dropout()
        x = self._inputs(x, "x")
        net = self.network
        y = net.as_targets(y, x.shape[0], self.loss, "y")
        weights = self._sample_weights(y, x.shape[0], sample_weight, class_weight, "sample_weight")
        self._check_embedding_training("train_on_batch", weights)
        net.refresh_hyperparameters()  # the optimizer's learning rate may have been changed
        track = bool(self.metrics)
        running = _Running(self, y, weights, np.empty((x.shape[0], net.n_outputs), net.dtype) if track else None,
                           np.empty(x.shape[0], np.int64) if track else None)
        rows = slice(0, x.shape[0])
        running.add(self._train_rows(net, x, y, weights, rows, x.shape[0], running.next_outputs(rows)), rows)
        return _as_results(running.logs(), return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """The loss (and metrics) on one batch, as ``evaluate`` without printing (Keras's ``test_on_batch``)."""
        self._require_compiled("test_on_batch")
        return self.evaluate(x, y, sample_weight=sample_weight, verbose=0, return_dict=return_dict)

    def _check_dropout(self):
        """Dropout trains inside the fused step only: not on the outputs (no Dense layer after it),
        nor on the path that computes the gradient outside it (a loss on the outputs). Kernel
        regularizers train with it: the fused step adds the record's penalties."""
        dropouts = [layer for layer in self.layers if isinstance(layer, Dropout) and layer.rate > 0]
        if not dropouts:
            return
        last_dense = max(i for i, layer in enumerate(self.layers) if isinstance(layer, Dense))
        after = [layer for layer in self.layers[last_dense:] if layer in dropouts]
        if after:
            raise NotImplementedError(f"{after[0].name}: a Dropout after the last Dense layer (on the model's "
                                      f"outputs) does not train in fusedense's fused step; put it before a Dense layer")
        if self._loss_path != "fused":
            raise NotImplementedError(
                f"{dropouts[0].name}: Dropout trains inside the fused training step, which this model's "
                f"loss on the outputs ({self.loss.name} without from_logits on a {self.output_activation} output) "
                f"cannot use; use a fused loss (e.g. from_logits=True on a linear output)")

    def _sample_weights(self, y, n, sample_weight, class_weight, name):
        """The per-row weights (None: all ones) in the model's dtype, from ``sample_weight`` or
        ``class_weight`` {class: weight} (Keras: not both)."""
        if sample_weight is not None and class_weight is not None:
            raise ValueError("class_weight: cannot use class_weight and sample_weight at the same time (as in Keras)")
        if class_weight is not None:
            if not isinstance(class_weight, dict):
                raise TypeError(f"class_weight: expected a dict {{class index: weight}}, got {type(class_weight).__name__}")
            labels = y if self.loss.sparse else (y.argmax(axis=1) if y.shape[1] > 1 else (y[:, 0] > 0.5).astype(int))
            table = np.ones(max(max(class_weight, default=0), int(labels.max())) + 1)
            for label, weight in class_weight.items():
                table[int(label)] = weight
            sample_weight = table[labels]
        if sample_weight is None:
            return None
        weights = np.asarray(sample_weight, dtype=np.float64)
        if weights.ndim == 2 and weights.shape[1] == 1:
            weights = weights[:, 0]
        if weights.shape != (n,):
            raise ValueError(f"{name}: expected one weight per sample, shape ({n},), got shape {weights.shape}")
        if not (np.isfinite(weights).all() and (weights >= 0).all()):
            raise ValueError(f"{name}: expected finite weights >= 0")
        return np.ascontiguousarray(weights, dtype=self.network.dtype)

    def _train_epoch(self, net, x, y, batches, steps, batch_size, running):
        """The next ``steps`` batches of the stream (one pass over the rows) as one engine call
        (net.fused_epoch): the same steps, rows and outputs as ``_train_rows`` batch by batch."""
        parts = [next(batches) for _ in range(steps)]
        order = None if isinstance(parts[0], slice) else np.concatenate(parts)
        out = running.outputs[:x.shape[0]] if running.outputs is not None else None
        loss = net.fused_epoch(x, y, self.loss.id, batch_size, order, outputs=out)
        running.add(loss, slice(0, x.shape[0]) if order is None else order)  # the pass as one batch

    def _train_rows(self, net, x, y, weights, rows, batch_size, out) -> float:
        """One training step on ``rows`` (a slice or an index array); ``out`` (None or a view of
        rows of the epoch's output buffer) receives the outputs before the update; returns the
        reported loss."""
        if isinstance(rows, slice):
            xb, tb = x[rows], y[rows]
            wb = None if weights is None else weights[rows]
        else:
            x_rows, t_rows = net._batch_buffers(x, y, batch_size)
            xb = x.take(rows, 0, x_rows[:len(rows)], "clip")
            tb = y.take(rows, 0, t_rows[:len(rows)], "clip")
            wb = None if weights is None else weights.take(rows)
        if self._loss_path == "fused":  # (kernel regularizers included: the record's penalties)
            loss = net.fused_step(xb, tb, self.loss.id, out, wb)
        else:
            loss = self._custom_step(net, xb, tb, wb, out)
        for bias in self._unbiased:  # use_bias=False: the bias stays zero, so it never shifts the forward pass
            bias[...] = 0
        return loss

    def _custom_step(self, net, xb, tb, wb, out) -> float:
        """A step the fused loss cannot take alone: Keras's losses on the outputs (their gradient
        with respect to the outputs becomes a weighted MSE target, which the fused step trains
        with the kernel regularizers' penalties); returns Keras's loss plus the penalties."""
        with net.training():
            out = np.empty((xb.shape[0], net.n_outputs), net.dtype) if out is None else out
            net.forward(xb, out)
            data_loss, grad = _losses.output_loss_and_gradient(self.loss.id, out, tb, self._from_logits, wb)
            if not math.isfinite(data_loss) or not np.isfinite(grad).all():
                raise FloatingPointError(f"the loss became {data_loss} at optimizer step {net.step + 1}, "
                                         f"which was not applied")
            # The engine's weighted MSE gradient is w_i·2·(outputs − targets)/(B·C): each row's
            # weight carries its gradient's scale so that outputs − targets stays within ±1,
            # where rounding the targets to the model's dtype costs the least.
            scale = np.abs(grad).max(axis=1) * (out.size / 2)
            scale[scale == 0] = 1.0
            targets = (out - grad * (out.size / 2) / scale[:, None]).astype(net.dtype)
            penalty = self._penalty()  # from the weights before the step, as the step's own
            net.fused_step(xb, targets, abi.LOSS_MSE, None, scale.astype(net.dtype))
            return data_loss + penalty

    def _loss_and_metrics(self, x, y, sample_weight=None):
        outputs = self.network.predict(x)
        loss = self.loss.value(outputs, y, self._from_logits, self.network.engine, sample_weight)
        return {"loss": loss + self._penalty(),
                **{name: metric_value(fn, outputs, y, self._from_logits, sample_weight if weighted else None)
                   for name, fn, weighted in self.metrics}}

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False):
        """The loss (and metrics) on ``(x, y)``: a float, or [loss, metric, ...] when metrics were compiled."""
        self._require_compiled("evaluate")
        x = self._inputs(x, "x")
        y = self.network.as_targets(y, x.shape[0], self.loss, "y")
        results = self._loss_and_metrics(x, y, self._sample_weights(y, x.shape[0], sample_weight, None, "sample_weight"))
        if (1 if verbose == "auto" else int(verbose)):
            print(format_logs(results), flush=True)
        return _as_results(results, return_dict)

    def predict(self, x, batch_size=None, verbose=0, steps=None, callbacks=None):
        """The model's outputs (e.g. class probabilities) for ``x``: one fused call per batch."""
        x = self._inputs(x)  # (builds the network on first use)
        return self.network.predict(x, batch_size=batch_size)

    __call__ = predict

    def predict_on_batch(self, x):
        return self.predict(x)

    def generate(self, n=1, max_len=30, temperature=1.0, seed=None, boundary=0):
        """Samples ``n`` token sequences (a model that starts with fd.Embedding and predicts the next
        token); see :meth:`fusedense.embedding.EmbeddingMLP.generate`."""
        net = self._built("generate")
        if not callable(getattr(net, "generate", None)):  # an EmbeddingMLP, or its quantized copy
            raise TypeError("generate: only a model that starts with fd.Embedding generates token sequences")
        return net.generate(n, max_len, temperature, seed, boundary)

    # --- weights, summary, saving ----------------------------------------------------------------

    def get_layer(self, name=None, index=None):
        """A layer by name or by position in ``layers`` (Keras's ``get_layer``, and its errors)."""
        if name is not None and index is not None:
            raise ValueError(f"Provide only a layer name or a layer index. Received: index={index}, name={name}.")
        if index is not None:
            if len(self.layers) <= index:
                raise ValueError(f"Was asked to retrieve layer at index {index} but model only has "
                                 f"{len(self.layers)} layers.")
            return self.layers[index]
        if name is not None:
            for layer in self.layers:
                if layer.name == name:
                    return layer
            raise ValueError(f"No such layer: {name}. Existing layers are: {[layer.name for layer in self.layers]}.")
        raise ValueError("Provide either a layer name or layer index at `get_layer`.")

    @property
    def input_shape(self):
        """(None, input width), or (None, context) for a model that starts with fd.Embedding."""
        self._built("input_shape")
        return (None, self.input_dim)

    @property
    def output_shape(self):
        return (None, self._built("output_shape").n_outputs)

    def _built(self, what):
        if self.network is None and self.input_dim is not None:
            self.build()
        if self.network is None:
            raise ValueError(f"{what}: the model has no weights yet; give input_shape= to the first "
                             f"layer or call fit first")
        return self.network

    @property
    def weights(self):
        """Keras's list: each layer's weights in order (views into the flat buffer)."""
        self._built("weights")
        return [w for layer in self.layers for w in (layer.weights if isinstance(layer, (Dense, Embedding)) else [])]

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        write_weights(self.weights, weights, "Keras's order: each layer's kernel, bias")

    def count_params(self) -> int:
        self._built("count_params")
        return sum(w.size for w in self.weights)

    def summary(self, print_fn=print):
        """Prints the layers with their output shapes and parameter counts (like Keras)."""
        net = self._built("summary")
        rows, width = [], self.input_dim
        activations = iter(self._fused_activations())
        for layer in self.layers:
            kind, params = type(layer).__name__, 0
            if isinstance(layer, Embedding):
                shape, params = f"(None, {self.input_dim}, {layer.dim})", layer.vocab_size * layer.dim
                width = self.input_dim * layer.dim
            elif isinstance(layer, Dense):
                activation = next(activations)
                kind = f"EmbeddingBag, {layer.mode}" if isinstance(layer, EmbeddingBag) else f"Dense, {activation}"
                params, width = width * layer.units + layer.units * layer.use_bias, layer.units
                shape = f"(None, {width})"
            else:
                shape = f"(None, {width})"
            rows.append((f"{layer.name} ({kind})", shape, f"{params:,}"))
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(_SUMMARY_HEADER)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
        rule = "-" * len(line(_SUMMARY_HEADER))
        print_fn(f'Model: "{self.name}" (backend {net.backend}, {net.dtype})')
        for text in (rule, line(_SUMMARY_HEADER), rule, *(line(r) for r in rows), rule):
            print_fn(text)
        total = self.count_params()
        print_fn(f"Total params: {total:,} ({total * net.dtype.itemsize / 1024:.1f} KB)")

    # ``save`` (architecture, weights and compile settings in one file) comes from fusedense.io,
    # ``from_keras`` / ``save`` to .keras from fusedense.keras_io: they build on this class

    def compile_config(self):
        """What compile() was called with (JSON-serialisable), or None."""
        if self.loss is None:
            return None
        return {**self._compile_config, "optimizer": [type(self.optimizer).__name__, self.optimizer.get_config()]}


_SUMMARY_HEADER = ("Layer (type)", "Output Shape", "Param #")


def _training_path(loss, output_activation) -> str:
    """'fused' when the fused step's loss on the last layer is Keras's loss (see fusedense.losses),
    else 'outputs' (Keras's formula on the outputs, its gradient handed to the fused step)."""
    spec = loss.spec
    if spec.id == abi.LOSS_MSE:
        return "fused"
    if loss.from_logits:
        if output_activation == "identity":
            return "fused"
        if output_activation in ("softmax", "sigmoid"):
            warnings.warn(f'"`{spec.name}` received `from_logits=True`, but the `output` argument was produced by '
                          f'a {output_activation} activation and thus does not represent logits. Was this intended?',
                          UserWarning, stacklevel=3)  # Keras's words (its TensorFlow backend)
        return "outputs"
    if output_activation in spec.output_activations and output_activation != "identity":
        return "fused"
    if output_activation == "identity":
        warnings.warn(f'"`{spec.name}` received `from_logits=False`, but the output layer is linear: its outputs '
                      f'are read as probabilities (normalised and clipped to [1e-7, 1 - 1e-7]), as Keras does. '
                      f'Was this intended? For logits use {type(loss).__name__}(from_logits=True).',
                      UserWarning, stacklevel=3)
    return "outputs"


def _as_list(metrics):
    if metrics is None:
        return []
    return list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]


def _validation_schedule(validation_freq):
    """epoch (0-based) → whether to validate after it (Keras: every ``validation_freq``-th epoch,
    or the 1-based epochs listed)."""
    if isinstance(validation_freq, (list, tuple, set)):
        listed = {int(e) for e in validation_freq}
        return lambda epoch: epoch + 1 in listed
    freq = _positive_int("validation_freq", validation_freq)
    return lambda epoch: (epoch + 1) % freq == 0


def _batch_stream(n, batch_size, shuffle, rng):
    """Batches of row positions (slices when the rows are in stored order, else index arrays):
    pass after pass over the data, reshuffled for each. An epoch takes the next ``steps`` batches:
    one pass by default; with ``steps_per_epoch`` the stream goes on across epochs, as Keras's
    epoch iterator does (a batch never spans two passes)."""
    while True:
        order = rng.permutation(n) if shuffle else None
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield slice(start, stop) if order is None else order[start:stop]


class _Running:
    """The epoch's running loss and training metrics (on each batch's own outputs)."""

    def __init__(self, model, y, weights, outputs, visited):
        self.model, self.y, self.weights, self.outputs, self.visited = model, y, weights, outputs, visited
        self.rows = 0
        self.loss_sum = 0.0
        self.done = 0  # rows whose metrics are summed in ``sums``
        self.sums = [0.0] * len(model.metrics)
        self.weight_sums = [0.0] * len(model.metrics)

    def next_outputs(self, rows):
        """Where the outputs of the batch ``rows`` go (None: no metrics to measure)."""
        if self.outputs is None:
            return None
        return self.outputs[self.rows:self.rows + (rows.stop - rows.start if isinstance(rows, slice) else len(rows))]

    def add(self, loss, rows):
        n_rows = rows.stop - rows.start if isinstance(rows, slice) else len(rows)
        if self.visited is not None:
            self.visited[self.rows:self.rows + n_rows] = np.arange(rows.start, rows.stop) if isinstance(rows, slice) \
                else rows
        self.loss_sum += loss * n_rows
        self.rows += n_rows

    def logs(self):
        logs = {"loss": self.loss_sum / max(self.rows, 1)}
        if self.model.metrics and self.rows > self.done:
            idx = self.visited[self.done:self.rows]
            out, y = self.outputs[self.done:self.rows], self.y[idx]
            w = None if self.weights is None else self.weights[idx].astype(np.float64)
            for i, (_, fn, weighted) in enumerate(self.model.metrics):
                chunk_weight = float(w.sum()) if weighted and w is not None else len(idx)
                self.sums[i] += metric_value(fn, out, y, self.model._from_logits, w if weighted else None) * chunk_weight
                self.weight_sums[i] += chunk_weight
            self.done = self.rows
        for i, (name, _, _) in enumerate(self.model.metrics):
            logs[name] = self.sums[i] / self.weight_sums[i] if self.weight_sums[i] else 0.0
        return logs


def _as_results(logs, return_dict):
    """Keras's return value of evaluate / train_on_batch: the logs dict, the loss alone, or
    [loss, metric, ...] in compile order."""
    if return_dict:
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values


def _positive_int(name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if allow_zero else 1):
        raise ValueError(f"{name}: expected a {'non-negative' if allow_zero else 'positive'} integer, got {value!r}")
    return int(value)
