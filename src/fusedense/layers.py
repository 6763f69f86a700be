"""Keras's layers (``keras.layers``) for ``fd.Sequential``: ``Input`` / ``InputLayer``, ``Dense``,
``Activation``, ``Dropout``, ``Embedding``, ``Flatten``, and ``EmbeddingBag`` (not Keras's: a bag of
token ids or hashed n-grams as the first layer of a text model, as PyTorch's nn.EmbeddingBag).

    import fusedense as keras
    model = keras.Sequential([keras.Input(shape=(784,)), keras.layers.Dense(128, activation="relu"),
                              keras.layers.Dropout(0.2), keras.layers.Dense(10)])

The layers describe the network; ``Sequential`` builds one fused :class:`fusedense.MLP` from the
Dense layers (an ``Activation`` layer becomes the activation of the linear Dense before it) and
views each Dense layer's kernel and bias in its flat parameter buffer. Unnamed layers get Keras's
names: ``dense``, ``dense_1``, ... counted per class name over the whole session.

Dropout is the identity at inference. In training it becomes the dropout rate of the next Dense
layer's input in the fused network's layer record (fusedense.layout): every engine draws the mask
inside its fused training step (fusedense.reference.dropout_keep) from the layer's seed and the
step count, so a seeded model trains the same on every engine and every run.
"""
from __future__ import annotations

import itertools
import re
from collections import defaultdict

import numpy as np

from . import initializers, regularizers
from .activations import get_activation

__all__ = ["Layer", "Input", "InputLayer", "Dense", "Activation", "Dropout", "Embedding", "EmbeddingBag", "Flatten"]

_UIDS = defaultdict(itertools.count)


def unique_name(prefix: str) -> str:
    """Keras's automatic names: the first ``prefix`` as is, then ``prefix_1``, ``prefix_2``, ..."""
    uid = next(_UIDS[prefix])
    return prefix if uid == 0 else f"{prefix}_{uid}"


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


class Layer:
    """Base class: a name (Keras's automatic one unless given)."""

    def __init__(self, name=None):
        self.name = unique_name(snake_case(type(self).__name__)) if name is None else str(name)

    def get_weights(self):
        return []

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"


class InputLayer(Layer):
    """``fd.Input(shape=(n_features,))`` / ``InputLayer(shape=...)`` as the first element of a
    Sequential (like keras.Input): fixes the input width. Not listed in ``model.layers`` (as in Keras 3)."""

    def __init__(self, shape=None, batch_size=None, dtype=None, name=None, batch_shape=None):
        if shape is None and batch_shape is not None:
            shape = tuple(batch_shape)[1:]
        if shape is None:
            raise ValueError("shape: expected the input shape without the batch axis, e.g. shape=(784,)")
        shape = tuple(shape)
        if len(shape) != 1:
            raise ValueError(f"shape: expected (n_features,) — Dense networks take flat feature vectors "
                             f"(token ids: (input_length,) before an Embedding), got {shape}")
        super().__init__(name)
        self.shape = (_positive_int("shape[0]", shape[0]),)


def Input(shape=None, batch_size=None, dtype=None, name=None, batch_shape=None):
    """Keras's ``keras.Input``: an InputLayer for ``fd.Sequential([fd.Input(shape=(n,)), ...])``."""
    return InputLayer(shape, batch_size, dtype, name, batch_shape)


class Dense(Layer):
    """A fully connected layer ``activation(x @ kernel + bias)``; ``activation=None`` is linear.

    input_shape=(n,) or input_dim=n on the first layer fixes the input width (else fit infers it).
    use_bias=False: the bias is kept at zero (not trained). kernel_regularizer: a penalty added to
    the loss, see fusedense.regularizers. alpha: the activation's parameter (leaky_relu, elu).
    """

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, name=None,
                 input_shape=None, input_dim=None, alpha=None, **kwargs):
        for arg, value in (("bias_regularizer", bias_regularizer), ("activity_regularizer", activity_regularizer),
                           ("kernel_constraint", kernel_constraint), ("bias_constraint", bias_constraint)):
            if value is not None:
                raise NotImplementedError(f"{arg}: fusedense's Dense supports kernel_regularizer only, got {value!r}")
        _check_kwargs(kwargs)
        super().__init__(name)
        self.units = _positive_int("units", units)
        self.activation = get_activation(activation).name
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.alpha = alpha
        if input_shape is not None:
            input_dim = InputLayer(input_shape, name="").shape[0]
        self.input_dim = None if input_dim is None else _positive_int("input_dim", input_dim)
        self._views = None  # (kernel, bias) views into the model's flat buffer once built

    def get_config(self):
        """The constructor arguments, JSON-serialisable (initializers by name: their seeds and
        settings only matter before the weights exist)."""
        config = {"units": self.units, "activation": self.activation, "name": self.name,
                  "kernel_initializer": initializers.name_of(self.kernel_initializer), "alpha": self.alpha}
        if not self.use_bias:
            config["use_bias"] = False
        if not isinstance(self.bias_initializer, initializers.Zeros):
            config["bias_initializer"] = initializers.name_of(self.bias_initializer)
        if self.kernel_regularizer is not None:
            config["kernel_regularizer"] = {"class_name": type(self.kernel_regularizer).__name__,
                                            "config": self.kernel_regularizer.get_config()}
        return config

    @property
    def kernel(self):
        return self._built_views()[0]

    @property
    def bias(self):
        return self._built_views()[1]

    @property
    def weights(self):
        """Keras's order and count: [kernel, bias], or [kernel] when use_bias=False."""
        views = self._built_views()
        return list(views if self.use_bias else views[:1])

    def get_weights(self):
        return [a.copy() for a in self.weights]

    def _built_views(self):
        if self._views is None:
            raise ValueError(f"{self.name}: the layer has no weights until the model is built "
                             f"(give input_shape= or call fit)")
        return self._views


class Activation(Layer):
    """Applies ``activation`` to the previous layer's outputs; it must follow a linear Dense layer,
    whose activation it becomes (one fused layer)."""

    def __init__(self, activation, name=None, **kwargs):
        _check_kwargs(kwargs)
        super().__init__(name)
        self.activation = get_activation(activation).name

    def get_config(self):
        return {"name": self.name, "activation": self.activation}


class Dropout(Layer):
    """Sets a fraction ``rate`` of its inputs to 0 during training (scaling the rest by
    1/(1 - rate)); the identity at inference (predict, evaluate). It must come before a Dense
    layer (it drops that layer's input); ``seed`` fixes its masks (None: drawn from the model's
    seed). Consecutive Dropout layers act as one of rate 1 − Π(1 − rate)."""

    def __init__(self, rate, noise_shape=None, seed=None, name=None, **kwargs):
        _check_kwargs(kwargs)
        if not (isinstance(rate, (int, float, np.floating)) and 0 <= rate < 1):
            raise ValueError(f"rate: expected a number in [0, 1), got {rate!r}")
        if noise_shape is not None:
            raise NotImplementedError("noise_shape: fusedense's Dropout drops each input independently")
        super().__init__(name)
        self.rate, self.seed = float(rate), seed

    def get_config(self):
        return {"rate": self.rate, "name": self.name} | ({} if self.seed is None else {"seed": self.seed})


class Embedding(Layer):
    """Token ids (n, input_length) → their rows of a (input_dim × output_dim) table; first layer
    only, followed by ``Flatten`` (the rows side by side feed the next Dense layer).
    Keras's argument names (``input_dim`` = vocabulary size, ``output_dim``); ``vocab_size`` /
    ``dim`` are accepted as fusedense's older names."""

    def __init__(self, input_dim=None, output_dim=None, embeddings_initializer="uniform", input_length=None,
                 name=None, vocab_size=None, dim=None, embeddings_regularizer=None, mask_zero=False, **kwargs):
        _check_kwargs(kwargs)
        if embeddings_regularizer is not None or mask_zero:
            raise NotImplementedError("Embedding: embeddings_regularizer and mask_zero are not supported")
        super().__init__(name)
        self.vocab_size = _positive_int("input_dim", vocab_size if input_dim is None else input_dim)
        self.dim = _positive_int("output_dim", dim if output_dim is None else output_dim)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.input_length = None if input_length is None else _positive_int("input_length", input_length)
        self._views = None  # (table,) once built

    def get_config(self):
        return {"vocab_size": self.vocab_size, "dim": self.dim, "input_length": self.input_length, "name": self.name}

    input_dim = property(lambda self: self.vocab_size)
    output_dim = property(lambda self: self.dim)

    @property
    def embeddings(self):
        return self._built_views()[0]

    @property
    def weights(self):
        return list(self._built_views())

    get_weights = Dense.get_weights
    _built_views = Dense._built_views


class EmbeddingBag(Dense):
    """A bag of token ids or hashed n-grams → the mean (``mode="mean"``, fastText's input layer)
    or the sum of their rows of an ``input_dim × output_dim`` table; the first layer of a text
    model, as PyTorch's ``nn.EmbeddingBag``.

        model = fd.Sequential([fd.layers.EmbeddingBag(2**20, 64), fd.layers.Dense(n_classes, "softmax")])
        model.fit(fd.HashingVectorizer(2**20, "word", norm=None).transform(texts), labels)

    The model's inputs are the bags: a SciPy sparse matrix (or fd CSR) of counts or weights over
    the ``input_dim`` buckets, or token-id sequences (a list of int sequences, or a 2-D int array
    of equal-length bags). In the fused network it is the sparse first layer with identity
    activation and no bias: a gather-sum of the rows a bag uses, whose backward and optimizer
    update touch only those rows.
    """

    MODES = ("mean", "sum")

    def __init__(self, input_dim, output_dim, mode="mean", embeddings_initializer="uniform", name=None, **kwargs):
        if mode not in self.MODES:
            raise ValueError(f"mode: expected one of {self.MODES}, got {mode!r}")
        fixed = sorted(set(kwargs) & {"activation", "use_bias", "units", "input_shape", "kernel_regularizer"})
        if fixed:
            raise TypeError(f"{fixed[0]}: EmbeddingBag is linear, has no bias or penalty (its update touches only "
                            f"the rows a batch uses) and is input_dim wide; it takes no {fixed[0]}")
        super().__init__(output_dim, use_bias=False, kernel_initializer=embeddings_initializer, name=name,
                         input_dim=_positive_int("input_dim", input_dim), **kwargs)
        self.mode = mode

    @property
    def output_dim(self):
        return self.units

    @property
    def embeddings(self):
        return self.kernel

    def get_config(self):
        return {"input_dim": self.input_dim, "output_dim": self.units, "mode": self.mode, "name": self.name,
                "embeddings_initializer": initializers.name_of(self.kernel_initializer)}

    def bags(self, x, dtype, name="x"):
        """``x`` (see the class docstring) as CSR rows of ``dtype``, each divided by its total for
        mode "mean". ValueError for ids outside [0, input_dim) or an empty bag list."""
        from . import sparse

        if sparse.is_sparse(x) or isinstance(x, sparse.CSR):
            rows = sparse.as_csr(x, dtype, name)
            if rows.shape[1] != self.input_dim:
                raise ValueError(f"{name}: expected {self.input_dim} columns (the EmbeddingBag's input_dim), "
                                 f"got a sparse matrix of shape {rows.shape}")
            if self.mode == "mean":  # divided below, in place: never the caller's values
                rows = sparse.CSR(rows.indptr, rows.indices, rows.data.copy(), rows.shape)
        else:
            rows = self._id_bags(x, dtype, name)
        return sparse.divide_rows(rows, "sum") if self.mode == "mean" else rows

    def _id_bags(self, x, dtype, name):
        from .sparse import CSR

        if isinstance(x, np.ndarray) and x.ndim == 2:
            sequences = list(x)
        elif isinstance(x, (list, tuple)) and all(np.ndim(seq) == 1 for seq in x):
            sequences = list(x)
        else:
            raise TypeError(f"{name}: expected a SciPy sparse matrix of bag counts, a list of token-id sequences "
                            f"or a 2-D int array of bags, got {type(x).__name__}")
        if not sequences:
            raise ValueError(f"{name}: expected at least one bag, got none")
        lengths = np.array([len(seq) for seq in sequences], np.int64)
        ids = np.concatenate([np.asarray(seq).ravel() for seq in sequences]) if lengths.sum() else np.zeros(0, np.int64)
        if ids.size and ids.dtype.kind not in "iu":
            raise ValueError(f"{name}: expected integer token ids, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.input_dim):
            raise ValueError(f"{name}: token ids must lie in [0, {self.input_dim}) (input_dim), got values in "
                             f"[{ids.min()}, {ids.max()}]")
        indptr = np.zeros(len(sequences) + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        return CSR(indptr, ids.astype(np.int64), np.ones(ids.size, dtype), (len(sequences), self.input_dim))


class Flatten(Layer):
    """Joins the Embedding's (input_length × output_dim) rows into one feature vector per sample
    (on flat inputs it changes nothing)."""

    def __init__(self, data_format=None, name=None, **kwargs):
        _check_kwargs(kwargs)
        super().__init__(name)

    def get_config(self):
        return {"name": self.name}


def _check_kwargs(kwargs):
    """Keras's base-layer keywords that change nothing here are accepted; others are errors."""
    unknown = set(kwargs) - {"trainable", "dtype", "autocast", "input_shape", "input_dim"}
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    if kwargs.get("trainable") is False:
        raise NotImplementedError("trainable=False: fusedense trains every layer of a model")
