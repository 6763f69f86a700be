"""fusedense: fused CPU kernels for neural-network dense layers.

    >>> import fusedense as fd
    >>> y = fd.dense(x, W, b, activation="relu")          # act(x @ W + b) in one pass
"""
from .activations import ACTIVATIONS
from ._backends import backends, get_backend, set_backend, use_backend
from .functional import (activate, activation_grad, adam_step, binary_cross_entropy, dense, dense_grad,
                         mean_squared_error, mlp_forward, sgd_step, softmax_cross_entropy)
from .layout import layer_views, make_layout
from .threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "activate", "activation_grad", "adam_step", "backends", "binary_cross_entropy",
    "dense", "dense_grad", "get_backend", "get_num_threads", "layer_views", "make_layout",
    "mean_squared_error", "mlp_forward", "set_backend", "set_num_threads", "sgd_step",
    "softmax_cross_entropy", "use_backend",
]
