"""fusedense: fused CPU kernels for neural-network dense layers.

    >>> import fusedense as fd
    >>> y = fd.dense(x, W, b, activation="relu")          # act(x @ W + b) in one pass
"""
from . import (callbacks, datasets, importers, initializers, layers, losses, metrics,  # importers: fd.MLP.from_torch
               optimizers, regularizers, utils)
from .activations import ACTIVATIONS
from ._backends import backends, get_backend, set_backend, use_backend
from .functional import (activate, activation_grad, adam_step, binary_cross_entropy, dense, dense_grad,
                         mean_squared_error, mlp_forward, sgd_step, softmax_cross_entropy, sparse_dense,
                         sparse_dense_grad)
from .hashing import HashingVectorizer
from .keras_io import load_keras, load_model  # fd.Sequential.from_keras, model.save("m.keras")
from .layout import layer_views, make_layout
from .embedding import EmbeddingMLP
from .layers import Activation, Dense, Dropout, Embedding, EmbeddingBag, Flatten, Input, InputLayer
from .models import Sequential
from .network import MLP
from .quantized import QuantizedMLP, quantize


from .text import TextClassifier
from .threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

_LAZY = {"MLPClassifier": "fusedense.sklearn", "MLPRegressor": "fusedense.sklearn"}


def __getattr__(name):
    """The scikit-learn-style estimators load on first use: they import scikit-learn if present,
    which `import fusedense` must not do."""
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fusedense' has no attribute {name!r}")


__all__ = [
    # the model fronts
    "Activation", "HashingVectorizer", "MLP", "MLPClassifier", "MLPRegressor", "Dense", "Dropout", "Embedding", "EmbeddingBag",
    "EmbeddingMLP", "InputLayer", "QuantizedMLP", "quantize",
    "Flatten", "Input", "Sequential", "TextClassifier",
    "callbacks", "datasets", "initializers", "layers", "load_keras", "load_model", "losses", "metrics", "optimizers",
    "regularizers",
    # the functional API and backend control
    "ACTIVATIONS", "activate", "activation_grad", "adam_step", "backends", "binary_cross_entropy",
    "dense", "dense_grad", "get_backend", "get_num_threads", "layer_views", "make_layout",
    "mean_squared_error", "mlp_forward", "set_backend", "set_num_threads", "sgd_step",
    "softmax_cross_entropy", "sparse_dense", "sparse_dense_grad", "use_backend",
]
