"""Dropout masks drawn inside the training step: ``reference.dropout_keep``'s counter-based
generator (SplitMix64 over (seed, step, layer, row, column)) in wrapping uint64 arithmetic, so
that this engine keeps exactly the elements the oracle and the Cython kernels keep.

Every operand below is a uint64: numba turns a uint64 mixed with a signed integer into a
float64, which would silently change the integers."""
import numpy as np

from .jit import kernel

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)


@kernel
def mix64(z):
    """SplitMix64's finalizer."""
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


@kernel
def dropout_key(seed, step, layer):
    """The stream of one layer's mask at one step: mix64(mix64(mix64(seed ^ GOLDEN) ^ step) ^ layer)."""
    return mix64(mix64(mix64(np.uint64(seed) ^ GOLDEN) ^ np.uint64(step)) ^ np.uint64(layer))


@kernel
def apply_dropout(layers, layer, step, src, dst):
    """dst = src · mask · 1/(1 − rate) for the (rows, fan_in) input of ``layer`` at ``step``
    (src and dst may be the same array: the backward masks dx in place). Nothing happens for
    rate 0; the caller skips step 0."""
    rate = layers[layer]["dropout"]
    if rate == 0.0:
        return
    key = dropout_key(layers[layer]["seed"], step, layer)
    threshold = np.uint64(rate * 65536.0)  # exact, and truncated: floor(rate · 2^16)
    scale_of = np.zeros(2, dst.dtype)
    scale_of[1] = 1.0 / (1.0 - rate)  # [dropped, kept], rounded to the dtype as the other engines do
    n_rows, n_cols = src.shape
    u = np.uint64(0)
    for r in range(n_rows):
        for c in range(n_cols):
            i = np.uint64(r) * np.uint64(n_cols) + np.uint64(c)
            lane = i & np.uint64(3)
            if lane == np.uint64(0) or c == 0:  # a new hash every 4 elements (and at each row's start)
                u = mix64(key + ((i >> np.uint64(2)) + np.uint64(1)) * GOLDEN)
            bits = (u >> (np.uint64(16) * lane)) & np.uint64(0xFFFF)
            dst[r, c] = src[r, c] * scale_of[np.int64(bits >= threshold)]
