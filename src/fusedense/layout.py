"""Flat parameter buffers: one contiguous array holds every layer's weights and biases.

A network's structure is its **layer record**: a read-only 1-D NumPy array of ``LAYER``
structs, one per layer, ``(offset, fan_in, fan_out, activation, alpha, l1, l2, dropout, seed)``. Layer
``l``'s weight matrix ``W`` (fan_in × fan_out, C order) starts at ``params[offset]`` and its bias
(fan_out) follows it directly; ``activation`` is the activation id, ``alpha`` its parameter;
``l1``, ``l2`` its kernel penalty (l1·Σ|W| + l2·ΣW², Keras's kernel_regularizer);
``dropout`` the rate at which a training step drops the layer's *input* (Keras's Dropout before
this Dense layer; 0: none) and ``seed`` the seed of its mask (see ``reference.dropout_keep``).
Every engine reads this one struct: Cython as ``const Layer[::1]`` (``kernels/layer.pxd`` declares the same
fields in the same order), Numba as a record array, NumPy by field name.

Only :func:`layer_record` builds a record, and it checks every layer against the parameter
count with Python integers, so no product or sum in a kernel can overflow or reach past
``params``. Records are read-only: a hand edit fails instead of reaching compiled code unchecked.

The public, Keras-friendly form stays two arrays: ``layout`` (n_layers, 4) int64 rows
``(offset, fan_in, fan_out, activation_id)``, ``alphas`` (n_layers,) float64 and ``penalties``
(n_layers, 2) float64 rows ``(l1, l2)``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .activations import BY_ID, get_activation, resolve_alpha

OFFSET, FAN_IN, FAN_OUT, ACT_ID = range(4)

#: One layer as the compiled kernels read it (9 × 8 bytes, no padding).
LAYER = np.dtype([("offset", np.int64), ("fan_in", np.int64), ("fan_out", np.int64),
                  ("activation", np.int64), ("alpha", np.float64), ("l1", np.float64), ("l2", np.float64),
                  ("dropout", np.float64), ("seed", np.int64)])

#: Dropout seeds are integers in [0, MAX_SEED] (every engine reads them as unsigned 64-bit).
MAX_SEED = 2**63 - 1


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


def layer_record(layout, alphas, n_params: int, name: str = "layout", penalties=None, dropout=None,
                 seeds=None) -> np.ndarray:
    """The checked, read-only ``LAYER`` array for ``layout`` (n_layers, 4), ``alphas``
    (n_layers,; None: zeros) and ``penalties`` (n_layers, 2) rows ``(l1, l2)`` (None: zeros)
    over a buffer of ``n_params`` elements; ``dropout`` (n_layers,; None: zeros) each layer's
    input dropout rate in [0, 1), ``seeds`` (n_layers,; None: zeros) their mask seeds,
    integers in [0, MAX_SEED].

    Raises ValueError/TypeError naming ``name`` (or ``alphas``) for a layout that is not an
    integer (n_layers ≥ 1, 4) array, a layer outside ``params``, a fan_in that differs from the
    previous fan_out, an unknown activation id, a row-wise activation before the last layer, or
    alphas / penalties that are not finite numbers ≥ 0 (one / two per layer), dropout rates
    outside [0, 1), seeds outside [0, MAX_SEED].
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
    record["l1"], record["l2"] = _checked_penalties(penalties, len(rows)).T
    record["dropout"] = _checked_dropout(dropout, len(rows))
    record["seed"] = _checked_seeds(seeds, len(rows))
    record.flags.writeable = False
    return record


def _per_layer_reals(name, values, n_layers, valid, expected):
    """``values`` (None: zeros) as float64 (n_layers,), each passing ``valid`` (an array test);
    else a TypeError/ValueError naming ``name`` and saying ``expected``."""
    if values is None:
        return np.zeros(n_layers)
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected real numbers (one per layer), got dtype {arr.dtype}")
    if arr.shape != (n_layers,):
        raise ValueError(f"{name}: expected shape ({n_layers},) (one per layer), got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not valid(arr).all():
        raise ValueError(f"{name}: expected {expected} (one per layer), got {arr.tolist()}")
    return arr


def _checked_penalties(penalties, n_layers):
    if penalties is None:
        return np.zeros((n_layers, 2))
    arr = np.asarray(penalties)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"penalties: expected real numbers ((l1, l2) per layer), got dtype {arr.dtype}")
    if arr.shape != (n_layers, 2):
        raise ValueError(f"penalties: expected shape ({n_layers}, 2) (one (l1, l2) row per layer), "
                         f"got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not (np.isfinite(arr) & (arr >= 0)).all():
        raise ValueError(f"penalties: expected finite numbers >= 0 ((l1, l2) per layer), got {arr.tolist()}")
    return arr


def record_penalties(record: np.ndarray) -> np.ndarray:
    """The (n_layers, 2) float64 ``(l1, l2)`` rows of a record (a new array)."""
    return np.stack([record["l1"], record["l2"]], axis=1)


def _checked_alphas(alphas, n_layers):
    return _per_layer_reals("alphas", alphas, n_layers, lambda a: np.isfinite(a) & (a >= 0), "finite numbers >= 0")


def _checked_dropout(rates, n_layers):
    # (a NaN rate fails both comparisons)
    return _per_layer_reals("dropout", rates, n_layers, lambda a: (a >= 0) & (a < 1), "rates in [0, 1)")


def _checked_seeds(seeds, n_layers):
    if seeds is None:
        return np.zeros(n_layers, np.int64)
    values = list(seeds) if isinstance(seeds, (list, tuple, np.ndarray)) else None
    if values is None or len(values) != n_layers:
        raise ValueError(f"seeds: expected {n_layers} integers (one dropout seed per layer), got {seeds!r}")
    for value in values:  # Python ints: a float or a huge value is refused, never truncated
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
                or not 0 <= int(value) <= MAX_SEED:
            raise ValueError(f"seeds: expected integers in [0, 2**63 - 1] (one per layer), got {value!r}")
    return np.array([int(v) for v in values], np.int64)


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


# --- quantized networks (fusedense.quantized) ------------------------------------------------
# A quantized network keeps everything in ONE byte buffer (``qbuffer``, uint8), as a float
# network keeps everything in ``params``: per layer, its packed weights, then float32 weight
# scales, float32 bias and int32 column sums, each region starting at a multiple of 64 bytes.
# The weights are packed for the integer/bf16 dot-product instructions: W (fan_in × fan_out) is
# padded with zeros to (k_pad × n_pad) and cut into panels of PANEL columns (the last one
# narrower, a multiple of COLUMN_PAD); panel c (columns j0 = c·PANEL ..., nb of them) starts at
# byte j0 · k_pad · WEIGHT_BYTES and holds, for each group p of GROUP[kind] consecutive k, its nb
# columns side by side, a column's GROUP values in one 32-bit lane:
#   int8: panel[p, j, t] = W[4p + t, j0 + j]   (k_pad/4, nb, 4) int8    (vpdpbusd: 4 k per lane)
#   bf16: panel[p, j, t] = W[2p + t, j0 + j]   (k_pad/2, nb, 2) bf16    (vdpbf16ps: 2 k per lane)
# One 64-byte load holds 16 output columns × GROUP k, and a panel is contiguous, so a batch-1
# product streams the buffer front to back (kernels/quantized.h).

QUANT_INT8, QUANT_BF16 = 0, 1
QUANT_KINDS = {"int8": QUANT_INT8, "bf16": QUANT_BF16}
#: k values per 32-bit lane of the packed weights, and bytes per weight
GROUP = {QUANT_INT8: 4, QUANT_BF16: 2}
WEIGHT_BYTES = {QUANT_INT8: 1, QUANT_BF16: 2}
#: output columns are padded to a multiple of this (one AVX-512 vector of int32/float32)
COLUMN_PAD = 16
#: output columns per weight panel (kernels/quantized.h: FD_Q_PANEL)
PANEL = 64
#: regions of the buffer start at multiples of this (a cache line)
REGION_ALIGN = 64
#: int8 × int8 products summed over k stay inside int32 up to this fan_in (127² · k < 2³¹)
MAX_INT8_FAN_IN = (2**31 - 1) // (127 * 127)

#: One quantized layer as the kernels read it (12 × 8 bytes). Offsets are in bytes of ``qbuffer``.
#: ``x_amax``: the calibrated |x| maximum of the layer's input (static int8 activation scale),
#: 0 for dynamic per-row scales (and for bf16).
QLAYER = np.dtype([("weights", np.int64), ("scales", np.int64), ("bias", np.int64), ("colsum", np.int64),
                   ("fan_in", np.int64), ("fan_out", np.int64), ("k_pad", np.int64), ("n_pad", np.int64),
                   ("activation", np.int64), ("kind", np.int64), ("alpha", np.float64), ("x_amax", np.float64)])


def round_up(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


def aligned_zeros(n: int, dtype) -> np.ndarray:
    """A zeroed 1-D array of ``n`` elements whose data starts on a REGION_ALIGN boundary: a
    weight row of 16 float32 then never straddles two cache lines (a buffer unpickled by Dask
    started at byte 21 of a line; at 4 bytes off, batch-1024 inference took 8% longer)."""
    dtype = np.dtype(dtype)
    raw = np.zeros(n * dtype.itemsize + REGION_ALIGN, np.uint8)
    start = -raw.ctypes.data % REGION_ALIGN
    return raw[start:start + n * dtype.itemsize].view(dtype)


def aligned(a: np.ndarray) -> np.ndarray:
    """``a`` itself when it is a writeable, C-contiguous 1-D buffer on a REGION_ALIGN boundary,
    else such a copy of it."""
    if a.ctypes.data % REGION_ALIGN == 0 and a.flags.c_contiguous and a.flags.writeable:
        return a
    copy = aligned_zeros(a.size, a.dtype)
    copy[:] = a.reshape(-1)
    return copy


def quantized_layout(sizes, kind):
    """The byte offsets of every region of a quantized network with layer sizes ``sizes``:
    returns ([(weights, scales, bias, colsum, k_pad, n_pad) per layer], total bytes)."""
    group, width = GROUP[kind], WEIGHT_BYTES[kind]
    regions, offset = [], 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        k_pad, n_pad = round_up(fan_in, group), round_up(fan_out, COLUMN_PAD)
        starts = []
        for size in (k_pad * n_pad * width, 4 * n_pad, 4 * n_pad, 4 * n_pad):
            starts.append(offset)
            offset += round_up(size, REGION_ALIGN)
        regions.append((*starts, k_pad, n_pad))
    return regions, offset


def quantized_record(rows, n_bytes: int, name: str = "qlayers") -> np.ndarray:
    """The checked, read-only ``QLAYER`` array for ``rows`` (dicts or tuples in QLAYER's field
    order) over a ``qbuffer`` of ``n_bytes`` bytes.

    Raises ValueError naming ``name`` for a region outside the buffer or not aligned, padded
    sizes that do not match fan_in/fan_out, a fan_in that differs from the previous fan_out, an
    int8 fan_in past MAX_INT8_FAN_IN (int32 accumulators could wrap), mixed or unknown kinds, an
    unknown activation or a row-wise one before the last layer, or an alpha / x_amax that is not
    a finite number >= 0.
    """
    record = np.zeros(len(rows), QLAYER)
    if not len(rows):
        raise ValueError(f"{name}: expected at least one layer, got none")
    for l, row in enumerate(rows):
        record[l] = tuple(row[f] for f in QLAYER.names) if isinstance(row, dict) else tuple(row)
    fields = {f: record[f].tolist() for f in QLAYER.names}  # Python numbers: sums cannot wrap
    for l in range(len(rows)):
        get = {f: fields[f][l] for f in QLAYER.names}
        kind, fan_in, fan_out = get["kind"], get["fan_in"], get["fan_out"]
        if kind not in GROUP or kind != fields["kind"][0]:
            raise ValueError(f"{name}[{l}]: kind {kind!r}: expected {QUANT_INT8} (int8) or {QUANT_BF16} (bf16), "
                             f"the same for every layer")
        if fan_in < 1 or fan_out < 1 or get["k_pad"] != round_up(fan_in, GROUP[kind]) \
                or get["n_pad"] != round_up(fan_out, COLUMN_PAD):
            raise ValueError(f"{name}[{l}]: sizes (fan_in, fan_out, k_pad, n_pad) = "
                             f"{(fan_in, fan_out, get['k_pad'], get['n_pad'])}; expected sizes >= 1, k_pad = "
                             f"fan_in rounded up to {GROUP[kind]}, n_pad = fan_out rounded up to {COLUMN_PAD}")
        if kind == QUANT_INT8 and fan_in > MAX_INT8_FAN_IN:
            raise ValueError(f"{name}[{l}]: fan_in {fan_in} > {MAX_INT8_FAN_IN}: int8 products summed over it "
                             f"could overflow the int32 accumulators")
        if l and fan_in != fields["fan_out"][l - 1]:
            raise ValueError(f"{name}[{l}]: fan_in {fan_in} does not match the previous layer's fan_out "
                             f"{fields['fan_out'][l - 1]}")
        sizes = {"weights": get["k_pad"] * get["n_pad"] * WEIGHT_BYTES[kind], "scales": 4 * get["n_pad"],
                 "bias": 4 * get["n_pad"], "colsum": 4 * get["n_pad"]}
        for region, size in sizes.items():
            start = get[region]
            if start < 0 or start % REGION_ALIGN or start + size > n_bytes:
                raise ValueError(f"{name}[{l}]: {region} region qbuffer[{start}:{start + size}] is not a "
                                 f"{REGION_ALIGN}-byte aligned part of the {n_bytes}-byte buffer")
        act = get["activation"]
        if not 0 <= act < len(BY_ID) or (BY_ID[act].rowwise and l != len(rows) - 1):
            raise ValueError(f"{name}[{l}]: activation id {act!r}: expected one in [0, {len(BY_ID)}), "
                             f"row-wise ones only on the last layer")
        for field in ("alpha", "x_amax"):
            value = get[field]
            if not (value >= 0 and value < np.inf and np.float32(value) < np.inf):
                raise ValueError(f"{name}[{l}]: {field} {value!r}: expected a finite number >= 0")
    record.flags.writeable = False
    return record


def quantized_layer_views(qbuffer: np.ndarray, record: np.ndarray):
    """Per layer, ``(W, scales, bias, colsum)``: the packed weights unpacked to (fan_in × fan_out)
    (int8, or bf16 as uint16 bit patterns; copies) and views of the float32 scales, float32 bias
    and int32 column sums (fan_out each)."""
    views = []
    for layer in record:
        kind, fan_in, fan_out = int(layer["kind"]), int(layer["fan_in"]), int(layer["fan_out"])
        k_pad, n_pad, group = int(layer["k_pad"]), int(layer["n_pad"]), GROUP[kind]
        dtype = np.int8 if kind == QUANT_INT8 else np.uint16
        start = int(layer["weights"])
        packed = qbuffer[start:start + k_pad * n_pad * WEIGHT_BYTES[kind]].view(dtype)
        W = unpack_panels(packed, k_pad, n_pad, group)
        region = {f: qbuffer[int(layer[f]):int(layer[f]) + 4 * fan_out] for f in ("scales", "bias", "colsum")}
        views.append((W[:fan_in, :fan_out].copy(), region["scales"].view(np.float32),
                      region["bias"].view(np.float32), region["colsum"].view(np.int32)))
    return views


def pack_panels(W: np.ndarray, group: int) -> np.ndarray:
    """The packed panels (flat, W's dtype) of a padded (k_pad × n_pad) matrix (see above)."""
    k_pad, n_pad = W.shape
    return np.concatenate([W[:, j0:j0 + PANEL].reshape(k_pad // group, group, -1).transpose(0, 2, 1).ravel()
                           for j0 in range(0, n_pad, PANEL)])


def unpack_panels(packed: np.ndarray, k_pad: int, n_pad: int, group: int) -> np.ndarray:
    """The (k_pad × n_pad) matrix of ``pack_panels``'s output (a new array)."""
    W = np.empty((k_pad, n_pad), packed.dtype)
    for j0 in range(0, n_pad, PANEL):
        nb = min(PANEL, n_pad - j0)
        panel = packed[j0 * k_pad:(j0 + nb) * k_pad].reshape(k_pad // group, nb, group)
        W[:, j0:j0 + nb] = panel.transpose(0, 2, 1).reshape(k_pad, nb)
    return W
