"""Flat parameter buffers: one contiguous array holds every layer's weights and biases.

``layout`` is an int64 array of shape (n_layers, 4); row ``l`` is
``(offset, fan_in, fan_out, activation_id)``. Layer ``l``'s weight matrix ``W`` (fan_in × fan_out,
C order) starts at ``params[offset]`` and its bias (fan_out) follows it directly. ``alphas``
(float64, one per layer) holds each layer's activation parameter. Compiled kernels read the
same three arrays, so this file is the single definition of the format.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .activations import get_activation, resolve_alpha

OFFSET, FAN_IN, FAN_OUT, ACT_ID = range(4)


def make_layout(sizes: Sequence[int], activations: Sequence, alphas: Sequence | None = None, start: int = 0):
    """Layout for layers ``sizes[0] → sizes[1] → … → sizes[-1]``, the first starting at ``params[start]``
    (the ``start`` entries before it hold e.g. an embedding table).

    Returns ``(layout, alphas, n_params)``; ``n_params`` counts the ``start`` entries too.
    """
    sizes = [int(s) for s in sizes]
    n_layers = len(sizes) - 1
    if n_layers < 1:
        raise ValueError(f"sizes: expected at least 2 sizes (input and output), got {sizes!r}")
    if any(s < 1 for s in sizes):
        raise ValueError(f"sizes: every layer size must be >= 1, got {sizes!r}")
    if len(activations) != n_layers:
        raise ValueError(f"activations: expected {n_layers} (one per layer), got {len(activations)}")
    if alphas is None:
        alphas = [None] * n_layers
    n_params = sum(sizes[l] * sizes[l + 1] + sizes[l + 1] for l in range(n_layers))
    if n_params > np.iinfo(np.int64).max:  # (Python ints: the sum itself cannot wrap)
        raise ValueError(f"sizes: {sizes!r} need {n_params} parameters, more than an int64 can index")
    layout = np.empty((n_layers, 4), dtype=np.int64)
    alpha_arr = np.empty(n_layers, dtype=np.float64)
    offset = int(start)
    for l in range(n_layers):
        act = get_activation(activations[l])
        if act.rowwise and l != n_layers - 1:
            raise ValueError(f"activations[{l}]: {act.name!r} is only allowed on the last layer")
        layout[l] = (offset, sizes[l], sizes[l + 1], act.id)
        alpha_arr[l] = resolve_alpha(act, alphas[l])
        offset += sizes[l] * sizes[l + 1] + sizes[l + 1]
    return layout, alpha_arr, offset


def layer_views(params: np.ndarray, layout: np.ndarray):
    """``[(W, b), ...]``: views into ``params`` (writing them writes the buffer)."""
    views = []
    for offset, fan_in, fan_out, _ in layout:
        w_end = offset + fan_in * fan_out
        views.append((params[offset:w_end].reshape(fan_in, fan_out), params[w_end:w_end + fan_out]))
    return views
