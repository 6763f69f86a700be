"""Quantized networks (``fusedense.quantized``): int8 and bf16 layers over the byte buffer and
record of ``fusedense.layout`` (QLAYER), in portable arithmetic.

int8: the same integers as the reference and the Cython kernels — each row quantized in float32
operations exactly as ``reference.quantize_rows_int8`` writes them, products summed in int32
(exact: the record limits fan_in so that 127² · fan_in fits). bf16: the input row rounded to
bf16, each k pair of products added in k order to a float32 sum (bf16 × bf16 products are
exact in float32, so the order of the sums is the only difference from the reference's float64).
"""
import numpy as np

from ..layout import PANEL, QUANT_INT8
from .activations import activation_row
from .jit import kernel

#: rows carried through every layer before the next block (the blocks' activations stay in cache)
BLOCK_ROWS = 64


@kernel
def _region(qbuffer, start, n_bytes):
    return qbuffer[start:start + n_bytes]


@kernel
def quantize_rows_int8(x, x_amax, q, scale):
    """Codes q (rows, ≥ k) int32 and row scales of float32 rows x (rows, k): see
    reference.quantize_rows_int8 (q's columns past k are left as they are)."""
    f127 = np.float32(127.0)
    for r in range(x.shape[0]):
        finite = True
        amax = np.float32(0.0)
        for j in range(x.shape[1]):
            a = abs(x[r, j])
            if not a <= np.float32(3.4028234663852886e38):
                finite = False
            elif a > amax:
                amax = a
        if x_amax > 0:
            amax = np.float32(x_amax)
        inv = f127 / amax if amax > 0 else np.float32(0.0)
        for j in range(x.shape[1]):
            v = np.rint(x[r, j] * inv) if finite else np.float32(0.0)
            q[r, j] = np.int32(min(max(v, np.float32(-127.0)), f127))
        scale[r] = amax / f127 if finite else np.float32(np.nan)


@kernel
def int8_product(q, weights, k_pad, n_pad, wide, acc):
    """acc (rows, n_pad) = q (rows, k_pad) @ W, W in int8 panels (fusedense.layout): int32 sums.
    Each group of 4 k of a panel is first spread into ``wide`` (4 × PANEL int32, one row per k),
    so that the loop over the columns reads contiguous int32 and vectorises (reading the int8
    panel in place, four interleaved bytes per column, the seed MLP at batch 64 took 19× longer)."""
    acc[:, :] = 0
    for j0 in range(0, n_pad, PANEL):
        nb = min(PANEL, n_pad - j0)
        panel = weights[j0 * k_pad:(j0 + nb) * k_pad].reshape((k_pad // 4, nb, 4))
        for p in range(k_pad // 4):
            for j in range(nb):
                for t in range(4):
                    wide[t, j] = panel[p, j, t]
            w0, w1, w2, w3 = wide[0], wide[1], wide[2], wide[3]
            for r in range(q.shape[0]):
                a0, a1, a2, a3 = q[r, 4 * p], q[r, 4 * p + 1], q[r, 4 * p + 2], q[r, 4 * p + 3]
                if a0 == 0 and a1 == 0 and a2 == 0 and a3 == 0:
                    continue
                row = acc[r, j0:j0 + nb]
                for j in range(nb):
                    row[j] += a0 * w0[j] + a1 * w1[j] + a2 * w2[j] + a3 * w3[j]


@kernel
def bf16_rows(x, xb):
    """xb (rows, ≥ k) float32 = x (rows, k) rounded to bf16 (nearest even; NaN stays NaN)."""
    bits = xb.view(np.uint32)
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            xb[r, j] = x[r, j]
            u = bits[r, j]
            if xb[r, j] != xb[r, j]:
                bits[r, j] = (u | np.uint32(0x400000)) & np.uint32(0xFFFF0000)
            else:
                bits[r, j] = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)


@kernel
def bf16_product(xb, weights, k_pad, n_pad, widened, acc):
    """acc (rows, n_pad) = xb (rows, k_pad) @ W, W in bf16 panels (fusedense.layout): float32
    sums, one k pair at a time (even k, then odd). ``widened``: scratch of 2·PANEL float32."""
    acc[:, :] = 0
    bits = widened.view(np.uint32)
    for j0 in range(0, n_pad, PANEL):
        nb = min(PANEL, n_pad - j0)
        panel = weights[j0 * k_pad:(j0 + nb) * k_pad]
        for p in range(k_pad // 2):
            for j in range(2 * nb):
                bits[j] = np.uint32(panel[2 * nb * p + j]) << np.uint32(16)
            for r in range(xb.shape[0]):
                x0, x1 = xb[r, 2 * p], xb[r, 2 * p + 1]
                for j in range(nb):
                    acc[r, j0 + j] = (acc[r, j0 + j] + x0 * widened[2 * j]) + x1 * widened[2 * j + 1]


@kernel
def _scratch(qlayers, rows):
    """Flat scratch for ``rows`` rows of the widest layer: int32 codes, float32 bf16 rows (each
    rows × widest k_pad), int32 and float32 sums (rows × widest n_pad), 2 · PANEL float32 (bf16
    weights widened), 4 × PANEL int32 (int8 weights widened)."""
    k_max, n_max = 1, 1
    for layer in range(qlayers.size):
        k_max = max(k_max, qlayers[layer]["k_pad"])
        n_max = max(n_max, qlayers[layer]["n_pad"])
    return (np.empty(rows * k_max, np.int32), np.empty(rows * k_max, np.float32),
            np.empty(rows * n_max, np.int32), np.empty(rows * n_max, np.float32), np.empty(2 * PANEL, np.float32),
            np.empty((4, PANEL), np.int32))


@kernel
def dense_rows(x, qbuffer, qlayers, layer, y, acc_out, scratch):
    """Layer ``layer`` over the rows of x (at most the scratch's rows) into y; an int8 layer's
    integer sums also into acc_out when it has y's shape."""
    q_flat, xb_flat, acc_flat, facc_flat, widened, wide = scratch
    rec = qlayers[layer]
    rows, k, n = x.shape[0], rec["fan_in"], rec["fan_out"]
    k_pad, n_pad = rec["k_pad"], rec["n_pad"]
    bias = _region(qbuffer, rec["bias"], 4 * n_pad).view(np.float32)
    if rec["kind"] == QUANT_INT8:
        q = q_flat[:rows * k_pad].reshape((rows, k_pad))
        q[:, k:] = 0
        scale = np.empty(rows, np.float32)
        quantize_rows_int8(x, rec["x_amax"], q, scale)
        weights = _region(qbuffer, rec["weights"], k_pad * n_pad).view(np.int8)
        acc = acc_flat[:rows * n_pad].reshape((rows, n_pad))
        int8_product(q, weights, k_pad, n_pad, wide, acc)
        scales = _region(qbuffer, rec["scales"], 4 * n_pad).view(np.float32)
        if acc_out.shape[0] == rows:
            acc_out[:, :] = acc[:, :n]
        for r in range(rows):
            for j in range(n):
                y[r, j] = np.float32(acc[r, j]) * (scale[r] * scales[j]) + bias[j]
    else:
        xb = xb_flat[:rows * k_pad].reshape((rows, k_pad))
        xb[:, k:] = 0
        bf16_rows(x, xb)
        weights = _region(qbuffer, rec["weights"], 2 * k_pad * n_pad).view(np.uint16)
        facc = facc_flat[:rows * n_pad].reshape((rows, n_pad))
        bf16_product(xb, weights, k_pad, n_pad, widened, facc)
        for r in range(rows):
            for j in range(n):
                y[r, j] = facc[r, j] + bias[j]
    for r in range(rows):
        activation_row(y[r], rec["activation"], rec["alpha"], y[r])


@kernel
def quantized_dense_forward(x, qbuffer, qlayers, layer, y, acc):
    """The contract's quantized_dense_forward (acc: an empty (0, 0) array when not asked for)."""
    scratch = _scratch(qlayers, min(BLOCK_ROWS, x.shape[0]))
    for start in range(0, x.shape[0], BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, x.shape[0])
        acc_rows = acc[start:stop] if acc.shape[0] == x.shape[0] else acc
        dense_rows(x[start:stop], qbuffer, qlayers, layer, y[start:stop], acc_rows, scratch)


@kernel
def quantized_mlp_forward(x, qbuffer, qlayers, out):
    """Every layer, BLOCK_ROWS rows at a time; the hidden activations ping-pong between two
    buffers, the last layer writes ``out``."""
    rows = min(BLOCK_ROWS, x.shape[0])
    scratch = _scratch(qlayers, rows)
    width = scratch[3].size // rows
    hidden = np.empty((2, rows * width), np.float32)
    no_acc = np.empty((0, 0), np.int32)
    n_layers = qlayers.size
    for start in range(0, x.shape[0], BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, x.shape[0])
        h = x[start:stop]
        for layer in range(n_layers):
            if layer == n_layers - 1:
                dense_rows(h, qbuffer, qlayers, layer, out[start:stop], no_acc, scratch)
            else:
                n = qlayers[layer]["fan_out"]
                target = hidden[layer % 2, :(stop - start) * n].reshape((stop - start, n))
                dense_rows(h, qbuffer, qlayers, layer, target, no_acc, scratch)
                h = target


@kernel
def quantized_sparse_forward(indptr, indices, values, table, scales, b, act_id, alpha, bf16, y):
    """The contract's quantized_sparse_forward: each row of y is the gather-sum of the table's
    rows (int8 codes, or bf16 bit patterns when ``bf16``) widened to float32 into ``wide`` as
    they are read, weighted by the values, in the non-zeros' order; then · scales + b and the
    activation in place."""
    n = table.shape[1]
    bits = np.empty(n, np.uint32)
    wide = bits.view(np.float32)
    for i in range(indptr.size - 1):
        yi = y[i]
        for c in range(n):
            yi[c] = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            v = values[k]
            t = table[indices[k]]
            if bf16:
                for c in range(n):
                    bits[c] = np.uint32(t[c]) << np.uint32(16)
            else:
                for c in range(n):
                    wide[c] = np.float32(t[c])
            for c in range(n):
                yi[c] += v * wide[c]
        for c in range(n):
            yi[c] = yi[c] * scales[c] + b[c]
        activation_row(yi, act_id, alpha, yi)
