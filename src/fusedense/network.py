"""``fd.MLP``: a multilayer perceptron over one flat parameter buffer.

The model owns the arrays the kernel interface works on — ``params`` (every W and b, see
:mod:`fusedense.layout`), ``grads`` (same layout), ``opt_state`` (the optimizer's rows) — and
runs inference and training through ONE backend call each (``mlp_forward``, ``mlp_train_step``).
The Keras- and scikit-learn-shaped fronts are thin layers over this class.

    >>> net = fd.MLP([64, 128, 10], ["relu", "softmax"], random_state=0)
    >>> net.set_optimizer("adam")
    >>> loss = net.train_step(x_batch, y_batch, loss="sparse_categorical_crossentropy")
    >>> proba = net.predict(x)
"""
from __future__ import annotations

import contextlib
import math
import threading

import numpy as np

from . import _backends, abi
from . import optimizers as _optimizers
from .activations import BY_ID, get_activation
from .gate import checked_record
from .layout import aligned, aligned_zeros, layer_views, make_layout, record_layout, record_penalties
from .losses import get_loss
from .sparse import CSR, as_csr, is_sparse
from .validation import as_labels, as_numeric_array

__all__ = ["MLP", "INITIALIZERS"]


def _glorot_uniform(rng, fan_in, fan_out):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out))


def _glorot_normal(rng, fan_in, fan_out):
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), (fan_in, fan_out))


def _he_uniform(rng, fan_in, fan_out):
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, (fan_in, fan_out))


def _he_normal(rng, fan_in, fan_out):
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), (fan_in, fan_out))


def _zeros(rng, fan_in, fan_out):
    return 0.0  # broadcast by the assignment: no temporary the size of W (a 2^20-row table's is large)


#: Weight initializers by Keras name (biases start at zero, as in Keras and PyTorch-style MLPs).
INITIALIZERS = {"glorot_uniform": _glorot_uniform, "glorot_normal": _glorot_normal,
                "he_uniform": _he_uniform, "he_normal": _he_normal, "zeros": _zeros}


def _diverged(loss, step):
    """The message of a training step whose loss is not finite (the engine did not apply it)."""
    return (f"training diverged: the loss became {loss} at optimizer step {step}, which was not applied (the "
            f"parameters and optimizer state are as before it); lower the learning rate, scale the inputs, or "
            f"check them for NaN/inf")


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


def write_weights(targets, arrays, order):
    """Copies ``arrays`` into the views ``targets`` after checking their count (``order`` says which
    arrays are expected) and every shape, before writing any."""
    if len(arrays) != len(targets):
        raise ValueError(f"weights: expected {len(targets)} arrays ({order}), got {len(arrays)}")
    arrays = [np.asarray(value) for value in arrays]
    for i, (target, value) in enumerate(zip(targets, arrays)):
        if value.shape != target.shape:
            raise ValueError(f"weights[{i}]: expected shape {target.shape}, got shape {value.shape}")
    for target, value in zip(targets, arrays):
        target[...] = value


class MLP:
    """A dense network ``sizes[0] → … → sizes[-1]``.

    activations: one name per layer, or one name for every hidden layer plus ``output_activation``.
    init: a name from ``INITIALIZERS`` (``"he_uniform"`` suits relu) or one per layer.
    random_state: seed (int) or ``numpy.random.Generator`` for the initial weights.
    backend: backend name ('auto' by default); resolved once, here.
    penalties: None, or (l1, l2) per layer: the kernel penalty l1·Σ|W| + l2·ΣW² every training
    step adds (W only, never the bias; see ``penalties`` and ``penalty_scale``).
    dropout: None, or one rate in [0, 1) per layer: the fraction of that layer's *input* each
    training step drops (inverted dropout, scaled by 1/(1 − rate); the identity in predict);
    dropout_seeds: one integer in [0, 2**63) per layer, the seeds of those masks (None: zeros).
    See :meth:`set_dropout`.
    """

    def __init__(self, sizes, activations="relu", output_activation="identity", alphas=None,
                 dtype=np.float32, init="glorot_uniform", random_state=None, backend=None, prefix=0,
                 penalties=None, dropout=None, dropout_seeds=None):
        # prefix: leading entries of ``params`` reserved for a table that precedes the dense stack
        # (EmbeddingMLP's embeddings); the layers' offsets start after it.
        sizes = [int(s) for s in sizes]
        n_layers = len(sizes) - 1
        if isinstance(activations, str) or activations is None:
            activations = [activations] * (n_layers - 1) + [output_activation]
        layout, alphas, self.n_params = make_layout(sizes, activations, alphas, start=prefix)
        self.layers = checked_record(layout, alphas, self.n_params, penalties=penalties, dropout=dropout,
                                     seeds=dropout_seeds)
        self.dtype = _check_dtype(dtype)
        self.params = aligned_zeros(self.n_params, self.dtype)
        self.grads = None  # allocated by the first training step
        self.optimizer = None
        self.opt_state = None
        self._hyper = None  # the optimizer's hyper vector (fusedense.abi), with the step count
        self._training = threading.RLock()  # one training thread at a time (see training())
        self._batch_rows = None  # train_epoch's gather buffers (x rows, target rows)
        self.set_backend(backend)
        self.initialize(init, random_state)

    # --- structure ------------------------------------------------------------------------

    @property
    def layers(self) -> np.ndarray:
        """The checked, read-only layer record (see fusedense.layout) every kernel call reads."""
        return self._layers

    @layers.setter
    def layers(self, record):
        self._layers = record
        self.sizes = (int(record[0]["fan_in"]),) + tuple(int(f) for f in record["fan_out"])
        self.activations = tuple(BY_ID[a].name for a in record["activation"])
        self._layout = record_layout(record)
        self._layout.flags.writeable = False

    @property
    def params(self) -> np.ndarray:
        """Every weight and bias in one flat buffer (see fusedense.layout); assignable with an
        array of the same dtype and size, which the model then uses (no copy)."""
        return self._params

    @params.setter
    def params(self, params):
        if not isinstance(params, np.ndarray) or params.dtype != self.dtype or params.shape != (self.n_params,) \
                or not params.flags.c_contiguous or not params.flags.writeable:
            got = (f"an array of shape {params.shape} and dtype {params.dtype}"
                   + ("" if params.flags.c_contiguous and params.flags.writeable else ", not writeable C-contiguous")
                   if isinstance(params, np.ndarray) else type(params).__name__)
            raise ValueError(f"params: expected a writeable C-contiguous {self.dtype} array of shape "
                             f"({self.n_params},) like the model's, got {got}")
        self._params = params

    @property
    def layout(self) -> np.ndarray:
        """(n_layers, 4) int64 rows (offset, fan_in, fan_out, activation id), read-only; assign a
        new array to change it (it is checked against ``params`` then)."""
        return self._layout

    @layout.setter
    def layout(self, layout):
        self._rebuild("layout", layout=layout)

    @property
    def alphas(self) -> np.ndarray:
        """Each layer's activation parameter (float64, read-only; assign to change)."""
        return self._layers["alpha"]

    @alphas.setter
    def alphas(self, alphas):
        self._rebuild("alphas", alphas=alphas)

    def _rebuild(self, name, **changes):
        """A new checked record: the current one's fields with ``changes`` (any of layout,
        alphas, penalties, dropout, seeds); errors name ``name``."""
        fields = dict(layout=self._layout, alphas=self._layers["alpha"], penalties=self.penalties,
                      dropout=self._layers["dropout"], seeds=self._layers["seed"])
        fields.update(changes)
        self.layers = checked_record(fields["layout"], fields["alphas"], self.n_params, name=name,
                                     penalties=fields["penalties"], dropout=fields["dropout"], seeds=fields["seeds"])

    @property
    def penalties(self) -> np.ndarray:
        """(n_layers, 2) float64 rows ``(l1, l2)``: each layer's kernel penalty
        ``l1·Σ|W| + l2·ΣW²``, which the training step adds to its loss and ``l1·sign(W) + 2·l2·W``
        to dW (never to the bias), times ``hyper[H_PENALTY_SCALE]`` (1 unless a front sets it).
        A new array; assign one to change them (checked: finite, >= 0)."""
        return record_penalties(self._layers)

    @penalties.setter
    def penalties(self, penalties):
        self._rebuild("penalties", penalties=penalties)

    @property
    def dropout(self) -> np.ndarray:
        """Each layer's input dropout rate (float64, read-only; see :meth:`set_dropout`)."""
        return self._layers["dropout"]

    @property
    def dropout_seeds(self) -> np.ndarray:
        """The seeds of the layers' dropout masks (int64, read-only)."""
        return self._layers["seed"]

    def set_dropout(self, rates, seeds=None):
        """Drops a fraction ``rates[l]`` of layer l's input at every training step (one rate in
        [0, 1) per layer; 0: none), Keras's Dropout before that Dense layer. The mask is drawn
        inside the engine's fused step from (seeds[l], the optimizer step, l, row, column)
        (fusedense.reference.dropout_keep): the same on every engine, reproducible by seed, new
        at every step. ``seeds``: one integer in [0, 2**63) per layer (None: keep the current)."""
        with self.training():
            self._rebuild("layout", dropout=rates, seeds=self._layers["seed"] if seeds is None else seeds)

    @property
    def n_inputs(self) -> int:
        return self.sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.sizes[-1]

    @property
    def output_activation(self) -> str:
        return self.activations[-1]

    @property
    def weights(self):
        """``[(W, b), ...]`` per layer: views into ``params`` (W is fan_in × fan_out)."""
        return layer_views(self.params, self.layout)

    def weight_arrays(self):
        """``[W1, b1, W2, b2, ...]`` (Keras order) as views into ``params``."""
        return [a for pair in self.weights for a in pair]

    def get_weights(self):
        """Copies of ``weight_arrays()``."""
        return [a.copy() for a in self.weight_arrays()]

    def set_weights(self, arrays):
        """Writes ``[W1, b1, W2, b2, ...]`` into the flat buffer (shapes must match exactly)."""
        write_weights(self.weight_arrays(), arrays, "one per weight_arrays() entry")

    def initialize(self, init="glorot_uniform", random_state=None):
        """Fresh weights (biases zero) and a fresh optimizer state."""
        rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
        inits = [init] * len(self.layout) if isinstance(init, str) else list(init)
        if len(inits) != len(self.layout):
            raise ValueError(f"init: expected one initializer per layer ({len(self.layout)}), got {len(inits)}")
        for name in inits:
            if name not in INITIALIZERS:
                raise ValueError(f"init: unknown initializer {name!r}; expected one of {', '.join(INITIALIZERS)}")
        for (W, b), name in zip(self.weights, inits):
            W[...] = INITIALIZERS[name](rng, *W.shape)
            b[...] = 0
        self.reset_optimizer()

    def set_backend(self, backend=None):
        """Selects the backend module (by name; None/'auto' = the fastest available) for this model."""
        self.engine = _backends.load(backend)

    def __getstate__(self):
        """Pickling (copy, joblib, multiprocessing, Dask) keeps the weights, the optimizer and its
        state, and the engine's name; the engine and the gate's record registration are rebuilt
        on unpickling (the record is checked again there), the lock is made anew."""
        state = self.__dict__.copy()
        for transient in ("engine", "_training", "_layers", "_layout", "_batch_rows"):
            state.pop(transient, None)
        state["backend_name"] = self.engine.NAME
        state["layout"], state["alphas"] = self._layout, self._layers["alpha"].copy()
        state["penalties"] = self.penalties
        state["dropout"], state["dropout_seeds"] = self._layers["dropout"].copy(), self._layers["seed"].copy()
        return state

    def __setstate__(self, state):
        # joblib.load(mmap_mode=...) hands back read-only memmaps: the model trains in owned arrays
        state = {k: np.array(v) if isinstance(v, np.memmap) else v for k, v in state.items()}
        backend, layout, alphas = state.pop("backend_name"), state.pop("layout"), state.pop("alphas")
        penalties = state.pop("penalties", None)  # (pickles from before the kernel penalties: none)
        dropout, seeds = state.pop("dropout", None), state.pop("dropout_seeds", None)  # (older pickles: none)
        self.__dict__.update(state)
        self._params = aligned(self._params)  # a buffer from Dask's or pickle 5's frames may start anywhere
        self._training = threading.RLock()
        self._batch_rows = None
        self.layers = checked_record(layout, alphas, self.n_params, penalties=penalties, dropout=dropout, seeds=seeds)
        if self._hyper is not None and self._hyper.size < abi.N_HYPER:  # pickled before H_PENALTY_SCALE
            self._hyper = np.concatenate([self._hyper, [self.penalty_scale] * (abi.N_HYPER - self._hyper.size)])
        self.set_backend(backend)

    @property
    def backend(self) -> str:
        return self.engine.NAME

    def __repr__(self):
        layers = " → ".join(str(s) for s in self.sizes)
        return f"MLP({layers}, activations={list(self.activations)}, dtype={self.dtype}, backend={self.backend!r})"

    # --- inference -------------------------------------------------------------------------

    def as_inputs(self, x, name="x") -> np.ndarray:
        """``x`` as the C-contiguous (n, n_inputs) array of the model's dtype that kernels take.

        Other float/int dtypes are converted (as Keras and scikit-learn do); shapes are checked.
        A SciPy sparse matrix or array (any format) becomes a :class:`fusedense.sparse.CSR` of
        the model's dtype instead, never a dense array: the first layer then runs as a
        gather-sum of its weight rows (``sparse_mlp_forward`` / ``sparse_train_step``).
        """
        if (type(x) is np.ndarray and x.dtype == self.dtype and x.ndim == 2
                and x.shape[1] == self.sizes[0] and x.shape[0] and x.flags.c_contiguous):
            return x  # the fast path: nothing to check or copy
        if isinstance(x, CSR) or is_sparse(x):
            csr = as_csr(x, self.dtype, name)
            if csr.shape[1] != self.sizes[0] or csr.shape[0] == 0:
                raise ValueError(f"{name}: expected shape (n_samples >= 1, {self.sizes[0]}) for a network with "
                                 f"{self.sizes[0]} inputs, got a sparse matrix of shape {csr.shape}")
            return csr
        arr = as_numeric_array(name, x)
        if arr.ndim != 2 or arr.shape[1] != self.sizes[0]:
            raise ValueError(f"{name}: expected shape (n_samples, {self.sizes[0]}) for a network with "
                             f"{self.sizes[0]} inputs, got shape {arr.shape}")
        if arr.shape[0] == 0:
            raise ValueError(f"{name}: expected at least one sample, got shape {arr.shape}")
        return np.ascontiguousarray(arr, dtype=self.dtype)

    def predict(self, x, batch_size=None) -> np.ndarray:
        """The network's outputs for ``x`` (n, n_inputs): one fused ``mlp_forward`` call per batch
        (the whole input at once when ``batch_size`` is None)."""
        x = self.as_inputs(x)
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                       or batch_size < 1):
            raise ValueError(f"batch_size: expected a positive integer or None, got {batch_size!r}")
        out = np.empty((x.shape[0], self.sizes[-1]), self.dtype)
        n = x.shape[0]
        if batch_size is None or batch_size >= n:
            self._forward(x, out)
            return out
        for start in range(0, n, batch_size):  # row slices of C-contiguous arrays stay contiguous
            stop = start + batch_size
            self._forward(x[start:stop], out[start:stop])
        return out

    def forward(self, x, out):
        """predict into a preallocated ``out``: ``x`` as ``as_inputs`` returns it (the gate checks
        both; ``out`` must not overlap ``x``)."""
        if np.may_share_memory(out, x.data if isinstance(x, CSR) else x):
            raise ValueError("out: shares memory with x; pass a separate array")
        self._forward(x, out)

    def _forward(self, x, out):
        """The one engine call of a forward pass, into an ``out`` that overlaps nothing (for a
        sparse x, the first layer a gather-sum of its weight rows)."""
        if isinstance(x, CSR):
            self.engine.sparse_mlp_forward(x.indptr, x.indices, x.data, self._params, self._layers, out)
        else:
            self.engine.mlp_forward(x, self._params, self._layers, out)

    __call__ = predict

    # --- training ----------------------------------------------------------------------------

    def set_optimizer(self, optimizer="adam"):
        """Uses ``optimizer`` (a name or a fusedense.optimizers object) from now on, with fresh state."""
        with self.training():
            self.optimizer = _optimizers.get(optimizer)
            self.reset_optimizer()

    @property
    def step(self) -> int:
        """Optimizer updates applied so far (Adam's bias correction counts from 1). The engine
        writes it as the last act of an update, so it always matches the parameters."""
        return 0 if self._hyper is None else int(self._hyper[abi.H_APPLIED])

    @step.setter
    def step(self, value):
        if self._hyper is not None:
            self._hyper[abi.H_APPLIED] = value

    def reset_optimizer(self):
        """Zeroes the optimizer's state (velocity / Adam moments) and its step count."""
        with self.training():
            self.step = 0
            self.opt_state = None if self.optimizer is None else np.zeros(
                (self.optimizer.state_rows, self.n_params), self.dtype)
            self.refresh_hyperparameters()

    def refresh_hyperparameters(self):
        """Re-reads the optimizer's hyperparameters (call after changing e.g. its learning_rate)."""
        with self.training():
            self._hyper = None if self.optimizer is None else self.optimizer.hyper(self.step)
            if self._hyper is not None:
                self._hyper[abi.H_PENALTY_SCALE] = self.penalty_scale

    @property
    def penalty_scale(self) -> float:
        """The factor of the kernel penalties (``penalties``) in the next training steps (1 unless
        set: scikit-learn's estimators set 1/rows of each batch); finite, >= 0."""
        return self.__dict__.get("_penalty_scale", 1.0)

    @penalty_scale.setter
    def penalty_scale(self, value):
        if not (value >= 0 and value < math.inf):  # (also refuses NaN)
            raise ValueError(f"penalty_scale: expected a finite number >= 0, got {value!r}")
        self._penalty_scale = float(value)
        if self._hyper is not None:
            self._hyper[abi.H_PENALTY_SCALE] = self._penalty_scale

    def as_targets(self, targets, n_rows, loss, name="y") -> np.ndarray:
        """Targets in the form the fused loss reads: int64 labels (sparse losses) or a float array
        of shape (n, n_outputs) in the model's dtype (a 1-D array is one output column)."""
        if loss.sparse:
            labels = np.asarray(targets)
            if labels.ndim == 2 and labels.shape[1] == 1:  # Keras accepts (n, 1) label columns
                labels = labels[:, 0]
            if labels.dtype.kind == "f" and np.array_equal(labels, np.round(labels)):
                labels = labels.astype(np.int64)  # whole-number float labels, as Keras accepts
            return as_labels(name, labels, n_rows, self.sizes[-1])
        arr = np.asarray(targets)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name}: expected numeric targets, got dtype {arr.dtype}")
        if arr.ndim == 1 and self.sizes[-1] == 1:
            arr = arr.reshape(-1, 1)
        if arr.shape != (n_rows, self.sizes[-1]):
            raise ValueError(f"{name}: expected shape ({n_rows}, {self.sizes[-1]}) (one row of "
                             f"{self.sizes[-1]} target(s) per sample) for loss {loss.name!r}, got shape {arr.shape}")
        return np.ascontiguousarray(arr, dtype=self.dtype)

    def train_step(self, x, targets, loss="mean_squared_error") -> float:
        """One minibatch update (forward, loss, backward, optimizer) in one backend call; returns
        the loss before the update. Uses Adam with Keras defaults if no optimizer was set."""
        loss = get_loss(loss, self.output_activation)
        x = self.as_inputs(x)
        return self.fused_step(x, self.as_targets(targets, x.shape[0], loss), loss.id)

    def fused_step(self, x, targets, loss_id, outputs=None, sample_weight=None) -> float:
        """train_step without the checks, for loops that validated their data once; ``outputs``
        (None, or a C-contiguous (n, n_outputs) array of the model's dtype) receives the
        network's outputs for ``x`` before the update; ``sample_weight`` (None or (n,) in the
        model's dtype) scales each row's loss and gradient (the engine's contract)."""
        with self.training():
            if self.optimizer is None:
                self.set_optimizer("adam")
            if self.grads is None:
                self.grads = aligned_zeros(self.n_params, self.dtype)
            step = self.step + 1
            self._hyper[abi.H_STEP] = step
            loss = self._train_kernel(x, targets, loss_id, outputs) if sample_weight is None else \
                self._train_kernel(x, targets, loss_id, outputs, sample_weight)
        if not math.isfinite(loss):
            raise FloatingPointError(_diverged(loss, step))
        return loss

    @contextlib.contextmanager
    def training(self):
        """Held while a thread trains this model: steps share the gradient buffer, the optimizer
        state and the gather buffers, so a second thread gets a clear error instead of lost or
        mixed updates (the same thread may nest: fit → train_epoch → fused_step)."""
        if not self._training.acquire(blocking=False):
            raise RuntimeError("this model is being trained by another thread; train it from one "
                               "thread at a time (or train a copy per thread)")
        try:
            yield
        finally:
            self._training.release()

    def _train_kernel(self, x, targets, loss_id, outputs, sample_weight=None) -> float:
        """The one backend call of a training step (subclasses with other inputs override it)."""
        if isinstance(x, CSR):
            return self.engine.sparse_train_step(x.indptr, x.indices, x.data, targets, self.params, self.grads,
                                                 self.opt_state, self._layers, loss_id, self._hyper, outputs,
                                                 sample_weight)
        return self.engine.mlp_train_step(x, targets, self.params, self.grads, self.opt_state,
                                            self._layers, loss_id, self._hyper, outputs, sample_weight)

    def train_epoch(self, x, targets, loss_id, batch_size, order=None, outputs=None) -> float:
        """One pass over checked ``x`` / ``targets`` (as ``as_inputs`` / ``as_targets`` return
        them) in minibatches of ``batch_size`` rows, one ``fused_step`` each; returns the mean loss.

        order: None (rows in stored order: every batch is a slice, no copy) or a permutation of
        the row indices, the order to visit them in. Each batch's rows are then gathered into
        small buffers reused from batch to batch: they are still in cache when the kernel reads
        them, where gathering the whole epoch at once writes (and first allocates) a copy of
        ``x`` as large as the data set.
        outputs: None, or an (n, n_outputs) array that receives each batch's outputs before its
        update, row i for the i-th row visited.
        Dense rows of a plain MLP go to the engine as one call (fused_epoch: the same steps).
        """
        if isinstance(x, np.ndarray) and type(self)._train_kernel is MLP._train_kernel:
            return self.fused_epoch(x, targets, loss_id, batch_size, order, outputs=outputs)
        with self.training():
            n = x.shape[0]
            if order is not None:
                x_rows, target_rows = self._batch_buffers(x, targets, batch_size)
            total = 0.0
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                if order is None:
                    xb, tb = x[start:stop], targets[start:stop]
                else:  # mode="clip" skips the bounds check: a permutation is in range (and "raise" copies)
                    rows = order[start:stop]
                    xb = x.take(rows, 0, x_rows[:stop - start], "clip")
                    tb = targets.take(rows, 0, target_rows[:stop - start], "clip")
                try:
                    loss = self.fused_step(xb, tb, loss_id, None if outputs is None else outputs[start:stop])
                except FloatingPointError as exc:
                    raise FloatingPointError(f"batch {start // batch_size + 1} of {-(-n // batch_size)}: "
                                             f"{exc}") from None
                total += loss * (stop - start)
            return total / n

    def fused_epoch(self, x, targets, loss_id, batch_size, order=None, sample_weight=None,
                    penalty_over_weight=False, epsilon_on_sqrt_v=False, outputs=None) -> float:
        """train_epoch as ONE engine call: the engine gathers each batch,
        steps and moves on without returning to Python, so the per-step Python work (gather,
        gate, lock, bookkeeping) and the step's per-call setup are paid once per epoch. Dense
        ``x`` only. sample_weight: None or (n,) in the model's dtype: each batch's loss is its
        rows' weighted average; penalty_over_weight / epsilon_on_sqrt_v: scikit-learn's
        per-batch penalty scale and Adam's ε placement (see the interface's mlp_train_epoch).
        Returns the rows' mean of the batch losses; a loss that is not finite raises
        FloatingPointError naming the batch (the batches before it applied, it not)."""
        with self.training():
            if self.optimizer is None:
                self.set_optimizer("adam")
            if self.grads is None:
                self.grads = aligned_zeros(self.n_params, self.dtype)
            m = x.shape[0] if order is None else len(order)
            losses = np.empty(-(-m // min(batch_size, m)))
            self._hyper[abi.H_STEP] = self.step + 1  # (the gate's dropout check reads it)
            loss = self.engine.mlp_train_epoch(x, targets, order, batch_size, self.params, self.grads, self.opt_state,
                                               self._layers, loss_id, self._hyper, sample_weight, losses, outputs,
                                               penalty_over_weight, epsilon_on_sqrt_v)
        if not math.isfinite(loss):
            batch = int(np.argmax(~np.isfinite(losses))) + 1
            raise FloatingPointError(f"batch {batch} of {len(losses)}: {_diverged(loss, self.step + 1)}")
        return loss

    def _batch_buffers(self, x, targets, batch_size):
        """(x rows, target rows) buffers of ``batch_size`` rows shaped like ``x`` / ``targets``,
        kept from one epoch (and fit) to the next while the shapes and dtypes stay the same."""
        rows = min(batch_size, x.shape[0])
        # a sparse x gathers its rows itself (CSR.take): an empty placeholder, never a dense buffer
        wanted = [((rows, 0) if isinstance(x, CSR) else (rows, *x.shape[1:]), x.dtype),
                  ((rows, *targets.shape[1:]), targets.dtype)]
        if self._batch_rows is None or [(b.shape, b.dtype) for b in self._batch_rows] != wanted:
            self._batch_rows = tuple(np.empty(shape, dtype) for shape, dtype in wanted)
        return self._batch_rows

    # --- saving and importing: ``save`` comes from fusedense.io, ``from_torch`` / ``from_sklearn``
    # from fusedense.importers, which build on this class and so cannot be imported by it ----------

    def architecture(self) -> dict:
        """The JSON-serialisable record from which ``MLP.from_architecture`` rebuilds this network."""
        record = {"sizes": list(self.sizes), "activations": list(self.activations),
                  "alphas": [float(a) if get_activation(name).has_alpha else None
                             for a, name in zip(self.alphas, self.activations)], "dtype": self.dtype.name}
        if (self.dropout > 0).any():
            record["dropout"] = self.dropout.tolist()
            record["dropout_seeds"] = self.dropout_seeds.tolist()
        if self.penalties.any():  # the kernel penalties are part of what training does
            record["penalties"] = self.penalties.tolist()
        return record

    @classmethod
    def from_architecture(cls, record: dict, backend=None) -> "MLP":
        """A network with the architecture of ``record`` (weights zero, to be filled by the caller)."""
        return cls(record["sizes"], record["activations"], alphas=record["alphas"],
                   dtype=record["dtype"], backend=backend, dropout=record.get("dropout"),
                   dropout_seeds=record.get("dropout_seeds"), penalties=record.get("penalties"))
