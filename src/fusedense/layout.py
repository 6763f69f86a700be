"""Flat parameter buffers: one contiguous array holds every layer's weights and biases.

A network's structure is its **layer record**: a read-only 1-D NumPy array of ``LAYER``
structs, one per layer, ``(offset, fan_in, fan_out, activation, alpha)``. Layer ``l``'s weight
matrix ``W`` (fan_in × fan_out, C order) starts at ``params[offset]`` and its bias (fan_out)
follows it directly; ``activation`` is the activation id, ``alpha`` its parameter. Every engine
reads this one struct: Cython as ``const Layer[::1]`` (``kernels/layer.pxd`` declares the same
fields in the same order), Numba as a record array, NumPy by field name.

Only :func:`layer_record` builds a record, and it checks every layer against the parameter
count with Python integers, so no product or sum in a kernel can overflow or reach past
``params``. Records are read-only: a hand edit fails instead of reaching compiled code unchecked.

The public, Keras-friendly form stays two arrays: ``layout`` (n_layers, 4) int64 rows
``(offset, fan_in, fan_out, activation_id)`` and ``alphas`` (n_layers,) float64.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .activations import BY_ID, get_activation, resolve_alpha

OFFSET, FAN_IN, FAN_OUT, ACT_ID = range(4)

#: One layer as the compiled kernels read it (5 × 8 bytes, no padding).
LAYER = np.dtype([("offset", np.int64), ("fan_in", np.int64), ("fan_out", np.int64),
                  ("activation", np.int64), ("alpha", np.float64)])


def make_layout(sizes: Sequence[int], activations: Sequence, alphas: Sequence | None = None, start: int = 0):
    """Layout for layers ``sizes[0] → sizes[1] → … → sizes[-1]``, the first starting at ``params[start]``
    (the ``start`` entries before it hold e.g. an embedding table).

    Returns ``(layout, alphas, n_params)``; ``n_params`` counts the ``start`` entries too.
    """
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"start: expected an integer >= 0 (the parameters before the first layer), got {start!r}")
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
    n_params = int(start) + sum(sizes[l] * sizes[l + 1] + sizes[l + 1] for l in range(n_layers))
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


def layer_record(layout, alphas, n_params: int, name: str = "layout") -> np.ndarray:
    """The checked, read-only ``LAYER`` array for ``layout`` (n_layers, 4) and ``alphas``
    (n_layers,; None: zeros) over a buffer of ``n_params`` elements.

    Raises ValueError/TypeError naming ``name`` (or ``alphas``) for a layout that is not an
    integer (n_layers ≥ 1, 4) array, a layer outside ``params``, a fan_in that differs from the
    previous fan_out, an unknown activation id, a row-wise activation before the last layer, or
    alphas that are not one finite number ≥ 0 per layer.
    """
    arr = np.asarray(layout)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 4 or arr.shape[0] < 1:
        raise ValueError(f"{name}: expected shape (n_layers, 4) with n_layers >= 1, got shape {arr.shape}")
    rows = arr.tolist()  # Python ints: int64 sums would wrap for huge fan_in × fan_out
    for l, (offset, fan_in, fan_out, act_id) in enumerate(rows):
        if fan_in < 1 or fan_out < 1 or offset < 0 or not 0 <= act_id < len(BY_ID):
            raise ValueError(f"{name}[{l}]: invalid row (offset, fan_in, fan_out, act_id) = "
                             f"{(offset, fan_in, fan_out, act_id)}; expected offset >= 0, sizes >= 1 "
                             f"and an activation id in [0, {len(BY_ID)})")
        end = offset + fan_in * fan_out + fan_out
        if end > n_params:
            raise ValueError(f"{name}[{l}]: layer needs params[{offset}:{end}] but params has "
                             f"{n_params} elements")
        if l and fan_in != rows[l - 1][2]:
            raise ValueError(f"{name}[{l}]: fan_in {fan_in} does not match the previous layer's "
                             f"fan_out {rows[l - 1][2]}")
        if BY_ID[act_id].rowwise and l != len(rows) - 1:
            raise ValueError(f"{name}[{l}]: row-wise activation {BY_ID[act_id].name!r} is only "
                             f"allowed on the last layer")
    record = np.zeros(len(rows), LAYER)
    record["offset"], record["fan_in"], record["fan_out"], record["activation"] = arr.astype(np.int64).T
    record["alpha"] = _checked_alphas(alphas, len(rows))
    record.flags.writeable = False
    return record


def _checked_alphas(alphas, n_layers):
    if alphas is None:
        return np.zeros(n_layers)
    arr = np.asarray(alphas)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"alphas: expected real numbers (one per layer), got dtype {arr.dtype}")
    if arr.shape != (n_layers,):
        raise ValueError(f"alphas: expected shape ({n_layers},) (one per layer), got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not (np.isfinite(arr) & (arr >= 0)).all():
        raise ValueError(f"alphas: expected finite numbers >= 0 (one per layer), got {arr.tolist()}")
    return arr


def record_layout(record: np.ndarray) -> np.ndarray:
    """The (n_layers, 4) int64 ``layout`` of a record (a new array)."""
    return np.stack([record[f] for f in ("offset", "fan_in", "fan_out", "activation")], axis=1)


def layer_views(params: np.ndarray, layout):
    """``[(W, b), ...]``: views into ``params`` (writing them writes the buffer). ``layout`` is a
    layer record or an (n_layers, 4) layout."""
    rows = layout.tolist() if isinstance(layout, np.ndarray) else layout
    views = []
    for offset, fan_in, fan_out, *_ in rows:
        w_end = offset + fan_in * fan_out
        views.append((params[offset:w_end].reshape(fan_in, fan_out), params[w_end:w_end + fan_out]))
    return views
