"""``keras.utils``'s helpers that MLP scripts call: ``to_categorical`` and ``set_random_seed``."""
import random

import numpy as np


def to_categorical(x, num_classes=None):
    """One-hot rows for integer class labels, as Keras: a trailing axis of length 1 is dropped,
    the class axis goes last, ``num_classes`` defaults to max(x) + 1; float64 0/1 values."""
    x = np.array(x, dtype="int64")
    shape = x.shape
    if len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    x = x.reshape(-1)
    if not num_classes:
        num_classes = int(x.max()) + 1
    if x.size and (x.min() < 0 or x.max() >= num_classes):
        raise ValueError(f"x: expected class labels in [0, {num_classes}), got values in "
                         f"[{x.min()}, {x.max()}]")
    categorical = np.zeros((x.shape[0], num_classes))
    categorical[np.arange(x.shape[0]), x] = 1
    return categorical.reshape(shape + (num_classes,))


def set_random_seed(seed):
    """Seeds Python's ``random`` and NumPy's global generator, as Keras does: a Sequential or
    estimator built afterwards without a seed of its own draws its seed from NumPy's global
    generator, so its initial weights, shuffling and dropout masks repeat from run to run."""
    if not isinstance(seed, int):
        raise ValueError(f"Expected `seed` argument to be an integer. Received: seed={seed} (of type {type(seed)})")
    random.seed(seed)
    np.random.seed(seed)
