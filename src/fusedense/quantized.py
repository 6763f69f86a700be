"""``fd.quantize``: int8 and bf16 copies of trained networks, for inference.

    >>> q = fd.quantize(net, "int8")                      # dynamic per-row activation scales
    >>> q = fd.quantize(net, "int8", calibration=x[:512]) # static scales measured on a sample
    >>> q = fd.quantize(net, "bf16")
    >>> q.predict(x)

int8: each weight column j is stored as q_W[:, j] = rint(W[:, j] / s_j), s_j = max|W[:, j]| / 127
(symmetric, per output channel, codes in [-127, 127]); each layer's input row is quantized the
same way at run time (one scale per row, or the calibrated scale of that layer), the products
summed exactly in int32, then y = act(acc · s_x · s_j + b) in float32.
bf16: weights and each layer's input rounded to bfloat16 (round to nearest even), products
summed in float32, y = act(acc + b).

The quantized model holds its weights in one byte buffer and a layer record
(:func:`fusedense.layout.quantized_layout`, checked by the gate); it runs in float32 whatever
the float model's dtype, and the float model is left unchanged. What it offers is inference:
``predict`` (and, through the fronts that wrap it, ``predict_proba`` / ``evaluate``).

Sparse input (SciPy CSR, fd.TextClassifier): the first layer is a gather-sum of W0's rows, and
its quantized form is a row-major TABLE — int8 codes with the same per-column scales (a
quarter of float32's bytes), or bf16 (half) — gathered and widened to float32 as the rows are
read (``quantized_sparse_forward``), the sums in float32, then · scale + bias and the
activation; the layers above it are the quantized dense stack. ``fd.quantize(...,
sparse_input=True)`` (automatic for a TextClassifier, an EmbeddingBag model or a sparse calibration sample) stores
only the table for the first layer, never its packed panels; a model quantized for dense input
that is given CSR rows unpacks its first layer's codes into that table once (the same codes
and scales) and runs the same path.
"""
from __future__ import annotations

import copy

import numpy as np

from . import _backends, reference
from .activations import BY_ID, get_activation, resolve_alpha
from .embedding import EmbeddingMLP
from .gate import checked_quantized_record
from .layout import (GROUP, QUANT_INT8, QUANT_KINDS, aligned, aligned_zeros, pack_panels, quantized_layer_views,
                     quantized_layout)
from .network import MLP
from .sparse import CSR, is_sparse

__all__ = ["quantize", "QuantizedMLP", "QuantizedEmbeddingMLP"]


def quantize_weights_int8(W):
    """(q int8 (k, n), scales float32 (n,)): symmetric per-column codes, W ≈ q · scales."""
    W = np.asarray(W, np.float32)
    amax = np.abs(W).max(axis=0)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, reference.INT8_MAX / amax, np.float32(0)).astype(np.float32)
    q = np.clip(np.rint(W * inv), -127, 127).astype(np.int8)
    return q, (amax / reference.INT8_MAX).astype(np.float32)


def quantize_table(W, dtype):
    """(table, scales float32 (n,)) of a sparse first layer's W (k, n): int8 codes with their
    per-column scales (as quantize_weights_int8), or bf16 bit patterns (uint16) with scales 1."""
    if dtype == "int8":
        return quantize_weights_int8(W)
    return reference.bf16_round(W), np.ones(W.shape[1], np.float32)


def _layer_inputs(network, x):
    """The float input of every layer of ``network`` for rows ``x`` (token rows for an
    EmbeddingMLP; the calibration pass). A sparse sample's first input is None: the gather
    quantizes no activations, and the table is widened only at the rows the sample names."""
    h = network.as_inputs(x, "calibration")
    if isinstance(network, EmbeddingMLP):
        h = network.embeddings[h].reshape(len(h), -1)
    layers = list(zip(network.weights, network.layers))
    inputs = []
    if isinstance(h, CSR):
        (W, b), layer = layers.pop(0)
        rows, slots = np.unique(h.indices, return_inverse=True)
        z = reference.csr(h.indptr, slots.reshape(-1), h.data.astype(np.float64), len(rows)) @ W[rows] + b
        inputs.append(None)
        h = BY_ID[layer["activation"]].forward(z.astype(np.float64), layer["alpha"])
    h = h.astype(np.float64)
    for (W, b), layer in layers:
        inputs.append(h)
        h = BY_ID[layer["activation"]].forward(h @ W + b, layer["alpha"])
    return inputs


class QuantizedMLP:
    """An int8 or bf16 copy of an :class:`fusedense.MLP` for inference (see the module docstring)."""

    dtype = np.dtype(np.float32)
    #: the sparse-input form's first layer (None: every layer is in the buffer): a row-major
    #: int8 / bf16 table (fan_in, n), its float32 column scales and bias, (activation id, alpha)
    table = table_scales = table_bias = table_activation = None

    def __init__(self, network: MLP, dtype="int8", calibration=None, backend=None, sparse_input=False):
        if dtype not in QUANT_KINDS:
            raise ValueError(f"dtype: expected 'int8' or 'bf16', got {dtype!r}")
        kind = QUANT_KINDS[dtype]
        if calibration is not None and kind != QUANT_INT8:
            raise ValueError("calibration: only int8 has activation scales to calibrate; pass None for bf16")
        if sparse_input and len(network.weights) < 2:
            raise ValueError("sparse_input: the sparse form needs a dense layer above the sparse first layer, "
                             "got a network of one layer")
        amaxes = [0.0] * len(network.activations)
        if calibration is not None:
            amaxes = [0.0 if h is None else float(np.float32(np.abs(h).max()))
                      for h in _layer_inputs(network, calibration)]
            if not all(np.isfinite(amaxes)):
                raise ValueError("calibration: the sample gives non-finite activations; pass finite rows")
        first = 0
        if sparse_input:  # the first layer becomes a table; the buffer holds the layers above it
            first, (W0, b0) = 1, network.weights[0]
            table, scales = quantize_table(W0, dtype)
            self._set_table(table, scales, np.asarray(b0, np.float32))
            amaxes[0] = 0.0  # (the gather quantizes no activations)
        regions, n_bytes = quantized_layout(network.sizes[first:], kind)
        qbuffer = aligned_zeros(n_bytes, np.uint8)
        for (W, b), (w_at, s_at, b_at, c_at, k_pad, n_pad) in zip(network.weights[first:], regions):
            k, n = W.shape
            padded = np.zeros((k_pad, n_pad), np.int8 if kind == QUANT_INT8 else np.uint16)
            scales = np.ones(n_pad, np.float32)
            colsum = np.zeros(n_pad, np.int32)
            if kind == QUANT_INT8:
                padded[:k, :n], scales[:n] = quantize_weights_int8(W)
                colsum[:] = 128 * padded.astype(np.int32).sum(axis=0)  # VNNI's u8 shift (kernels/quantized.h)
            else:
                padded[:k, :n] = reference.bf16_round(W)
            bias = np.zeros(n_pad, np.float32)
            bias[:n] = b
            packed = pack_panels(padded, GROUP[kind]).view(np.uint8)
            qbuffer[w_at:w_at + packed.size] = packed
            for at, values in ((s_at, scales), (b_at, bias), (c_at, colsum)):
                qbuffer[at:at + 4 * n_pad] = values.view(np.uint8)
        self._adopt(dict(MLP.architecture(network), dtype="float32"), dtype, amaxes, qbuffer,
                    backend if backend is not None else network.backend)

    def _set_table(self, table, scales, bias):
        """The sparse-input form's first layer (see the class attribute ``table``)."""
        n = table.shape[1]
        if table.dtype not in (np.int8, np.uint16) or table.ndim != 2 or scales.shape != (n,) or bias.shape != (n,):
            raise ValueError(f"table: expected int8 or uint16 (k, n) with n scales and n biases, got {table.dtype} "
                             f"{table.shape}, {scales.shape} scales, {bias.shape} biases")
        self.table, self.table_scales, self.table_bias = (np.ascontiguousarray(a) for a in (table, scales, bias))

    def _adopt(self, architecture, dtype, amaxes, qbuffer, backend):
        """Takes ``qbuffer`` as the network's buffer: builds and registers its checked record
        (of the layers above the table, when the model has one)."""
        self.qdtype, self.qbuffer = dtype, aligned(qbuffer)
        self.sizes, self.activations = tuple(architecture["sizes"]), tuple(architecture["activations"])
        kind = QUANT_KINDS[dtype]
        first = 0 if self.table is None else 1
        if first:
            if self.table.shape != (self.sizes[0], self.sizes[1]) or self.table.dtype != (
                    np.int8 if kind == QUANT_INT8 else np.uint16):
                raise ValueError(f"table: expected {dtype} codes of shape ({self.sizes[0]}, {self.sizes[1]}), got "
                                 f"{self.table.dtype} {self.table.shape}")
            activation = get_activation(self.activations[0])
            self.table_activation = (activation.id, float(resolve_alpha(activation, architecture["alphas"][0])))
        regions, n_bytes = quantized_layout(self.sizes[first:], kind)
        rows = []
        for l, (w_at, s_at, b_at, c_at, k_pad, n_pad) in enumerate(regions, start=first):
            activation = get_activation(self.activations[l])
            rows.append((w_at, s_at, b_at, c_at, self.sizes[l], self.sizes[l + 1], k_pad, n_pad, activation.id,
                         kind, resolve_alpha(activation, architecture["alphas"][l]), amaxes[l]))
        self.qlayers = checked_quantized_record(rows, qbuffer.size)
        self._sparse = None  # the sparse path's pieces, on first use (_sparse_layer)
        self.set_backend(backend)

    @classmethod
    def from_buffer(cls, architecture: dict, dtype: str, amaxes, qbuffer: np.ndarray, backend=None, table=None):
        """The quantized network of ``architecture`` (MLP.architecture()'s record) whose buffer is
        ``qbuffer`` (uint8, as ``quantized_layout`` lays it out) and whose int8 activation
        scales are ``amaxes`` (one per layer, 0: dynamic); for fusedense.io. ``table``: None, or
        the sparse-input form's (table, scales, bias) (the buffer then starts at layer 1)."""
        model = cls.__new__(cls)
        if table is not None:
            model._set_table(*table)
        model._adopt(architecture, dtype, list(amaxes), qbuffer, backend)
        return model

    def architecture(self) -> dict:
        """As MLP.architecture (dtype float32, what the quantized network computes in)."""
        alphas = list(self.qlayers["alpha"])
        if self.table is not None:
            alphas.insert(0, self.table_activation[1])
        return {"sizes": list(self.sizes), "activations": list(self.activations),
                "alphas": [float(a) if get_activation(name).has_alpha else None
                           for a, name in zip(alphas, self.activations)], "dtype": "float32"}

    # --- structure (as MLP's) -------------------------------------------------------------

    n_inputs, n_outputs, output_activation = MLP.n_inputs, MLP.n_outputs, MLP.output_activation

    @property
    def nbytes(self) -> int:
        """Bytes of the quantized weights, scales and biases (the table's too)."""
        table = 0 if self.table is None else self.table.nbytes + self.table_scales.nbytes + self.table_bias.nbytes
        return self.qbuffer.nbytes + table

    def dequantized_weights(self):
        """``[(W, b), ...]`` float32: the values the quantized layers multiply by."""
        pairs = []
        if self.table is not None:
            values = self.table if self.qdtype == "int8" else reference.bf16_to_float(self.table)
            pairs.append(((values * self.table_scales).astype(np.float32), self.table_bias.copy()))
        for W, scales, bias, _ in quantized_layer_views(self.qbuffer, self.qlayers):
            W = W * scales if self.qdtype == "int8" else reference.bf16_to_float(W)
            pairs.append((W.astype(np.float32), bias.copy()))
        return pairs

    def set_backend(self, backend=None):
        self.engine = _backends.load(backend)

    @property
    def backend(self) -> str:
        return self.engine.NAME

    def __getstate__(self):
        state = self.__dict__.copy()
        state["engine"] = self.engine.NAME
        state["qlayers"] = self.qlayers.copy()
        state["_sparse"] = None  # rebuilt (and registered) on first use
        return state

    def __setstate__(self, state):
        state = dict(state)
        backend, record = state.pop("engine"), state.pop("qlayers")
        self.__dict__.update(state)
        self.qbuffer = aligned(self.qbuffer)  # regions are REGION_ALIGN-aligned from the buffer's start
        self.qlayers = checked_quantized_record(list(record), self.qbuffer.size)
        self.set_backend(backend)

    def __repr__(self):
        return (f"QuantizedMLP({' → '.join(str(s) for s in self.sizes)}, {self.qdtype}, "
                f"activations={list(self.activations)}, backend={self.backend!r})")

    # --- inference: MLP's checks and batching, a quantized engine call -------------------------

    as_inputs = MLP.as_inputs
    as_targets = MLP.as_targets
    predict = MLP.predict
    forward = MLP.forward
    __call__ = MLP.predict

    def _forward(self, x, out):
        if isinstance(x, CSR) or self.table is not None:
            self._sparse_forward(x if isinstance(x, CSR) else CSR.from_dense(x), out)
        else:
            self.engine.quantized_mlp_forward(x, self.qbuffer, self.qlayers, out)

    def _sparse_layer(self):
        """(table, scales, bias, activation id, alpha, record of the layers above or None): the
        sparse first layer and what follows it. A model quantized for dense rows unpacks its
        first layer's codes once (the same codes and scales; bf16 scales are 1)."""
        if self._sparse is None:
            if self.table is not None:
                self._sparse = (self.table, self.table_scales, self.table_bias, *self.table_activation, self.qlayers)
            else:
                (W, scales, bias, _), = quantized_layer_views(self.qbuffer, self.qlayers[:1])
                rows = self.qlayers.tolist()
                above = checked_quantized_record(rows[1:], self.qbuffer.size) if len(rows) > 1 else None
                self._sparse = (np.ascontiguousarray(W), scales.copy(), bias.copy(), int(rows[0][8]), float(rows[0][10]),
                                above)
        return self._sparse

    def _sparse_forward(self, x, out):
        """CSR rows: the gather of the quantized table, then the quantized layers above it (two
        engine calls)."""
        table, scales, bias, act_id, alpha, above = self._sparse_layer()
        h = out if above is None else np.empty((x.shape[0], table.shape[1]), np.float32)
        self.engine.quantized_sparse_forward(x.indptr, x.indices, x.data, table, scales, bias, act_id, alpha, h)
        if above is not None:
            self.engine.quantized_mlp_forward(h, self.qbuffer, above, out)

    def fused_step(self, *args, **kwargs):
        raise TypeError("a quantized model is for inference; train the float model and quantize it again")

    train_step = train_epoch = fused_step


class QuantizedEmbeddingMLP(QuantizedMLP):
    """An int8 or bf16 copy of an :class:`fusedense.EmbeddingMLP`: the embedding table stays
    float32 (a gather, no product), the dense layers are quantized. ``predict`` and ``generate``
    as the float model's (generation: the whole sampling loop in one engine call)."""

    def __init__(self, network: EmbeddingMLP, dtype="int8", calibration=None, backend=None):
        super().__init__(network, dtype, calibration, backend)
        self.vocab_size, self.embedding_dim, self.context = network.vocab_size, network.embedding_dim, network.context
        self.embeddings = network.embeddings.astype(np.float32)  # a copy: the float model stays as it is
        self._logits = None

    @classmethod
    def from_buffer(cls, architecture: dict, dtype: str, amaxes, qbuffer: np.ndarray, backend=None,
                    embeddings=None):
        """As :meth:`QuantizedMLP.from_buffer` for ``architecture`` in EmbeddingMLP.architecture()'s
        form (dense sizes after the table, an "embedding" entry) and the float32 table
        ``embeddings`` (vocab_size, dim); for fusedense.io."""
        emb = architecture["embedding"]
        embeddings = np.ascontiguousarray(embeddings, np.float32)
        if embeddings.shape != (emb["vocab_size"], emb["dim"]):
            raise ValueError(f"embeddings: expected shape ({emb['vocab_size']}, {emb['dim']}), got {embeddings.shape}")
        flat = dict(architecture, sizes=[emb["context"] * emb["dim"], *architecture["sizes"]])
        model = super().from_buffer(flat, dtype, amaxes, qbuffer, backend)
        model.vocab_size, model.embedding_dim, model.context = emb["vocab_size"], emb["dim"], emb["context"]
        model.embeddings, model._logits = embeddings, None
        return model

    def architecture(self) -> dict:
        """As EmbeddingMLP.architecture (dense sizes after the table, dtype float32)."""
        return {**super().architecture(), "sizes": list(self.sizes[1:]),
                "embedding": {"vocab_size": self.vocab_size, "dim": self.embedding_dim, "context": self.context}}

    n_inputs = EmbeddingMLP.n_inputs
    as_inputs = EmbeddingMLP.as_inputs
    _sampling_uniforms = EmbeddingMLP._sampling_uniforms

    def _forward(self, tokens, out):
        x = self.embeddings[tokens].reshape(len(tokens), -1)
        self.engine.quantized_mlp_forward(x, self.qbuffer, self.qlayers, out)

    def _logits_qlayers(self):
        """The record with a softmax/log_softmax output read as logits (as EmbeddingMLP's)."""
        if self._logits is None:
            rows = self.qlayers.tolist()
            if BY_ID[rows[-1][8]].rowwise:
                rows[-1] = (*rows[-1][:8], get_activation("identity").id, *rows[-1][9:])
            self._logits = checked_quantized_record(rows, self.qbuffer.size)
        return self._logits

    def generate(self, n=1, max_len=30, temperature=1.0, seed=None, boundary=0):
        """As :meth:`fusedense.EmbeddingMLP.generate` (the same uniforms for the same seed): the
        whole sampling loop in one engine call."""
        uniforms = self._sampling_uniforms(n, max_len, temperature, seed, boundary)
        tokens = np.empty((n, max_len), np.int64)
        lengths = np.empty(n, np.int64)
        self.engine.quantized_embedding_generate(self.embeddings, self.qbuffer, self._logits_qlayers(), self.context,
                                                 uniforms, float(temperature), int(boundary), tokens, lengths)
        return [tokens[i, :lengths[i]] for i in range(n)]

    def __getstate__(self):
        state = super().__getstate__()
        state["_logits"] = None  # rebuilt (and registered) on first use
        return state


def quantize(model, dtype="int8", calibration=None, backend=None, sparse_input=None):
    """An int8 or bf16 copy of ``model`` for inference; ``model`` itself is not changed.

    model: an :class:`fusedense.MLP` (gives a :class:`QuantizedMLP`), an
    :class:`fusedense.EmbeddingMLP` (a :class:`QuantizedEmbeddingMLP`, which also generates), or a
    front holding one —
    a :class:`fusedense.Sequential`, an ``MLPClassifier`` / ``MLPRegressor`` or a fitted
    :class:`fusedense.TextClassifier` (gives a copy of the front whose network is quantized:
    ``predict``, ``predict_proba``, ``evaluate``, ``score`` work as before).
    dtype: ``"int8"`` (symmetric per-column weights, per-row dynamic activation scales) or
    ``"bf16"`` (round to nearest even).
    calibration: int8 only: sample rows (n, n_inputs); each layer's activation scale is then the
    largest |input| of that layer over the sample (static), instead of each row's own.
    backend: the engine of the quantized model (default: the model's).
    sparse_input: True: the model is fed SciPy sparse rows (a fd.TextClassifier, an estimator
    fitted on CSR): the first layer is stored only as a row-major quantized table (int8 with
    per-column scales, a quarter of the float32 bytes, or bf16) that the forward gathers from
    (the layers above: the quantized dense stack); dense rows given to it are converted to CSR.
    False: every layer in packed panels (CSR rows still work: the first layer's codes are
    unpacked into a table on first use). None (default): True for a fd.TextClassifier, a
    Sequential that starts with an EmbeddingBag, or a sparse ``calibration`` sample, else False.
    """
    from .layers import EmbeddingBag  # (fronts: imported here, not at module import)
    from .text import TextClassifier

    if sparse_input is None:
        layers = getattr(model, "layers", None)
        starts_with_bag = isinstance(layers, list) and bool(layers) and isinstance(layers[0], EmbeddingBag)
        sparse_input = (isinstance(model, TextClassifier) or starts_with_bag or isinstance(calibration, CSR)
                        or is_sparse(calibration))
    if isinstance(model, EmbeddingMLP):
        if sparse_input:
            raise ValueError("sparse_input: an EmbeddingMLP takes token ids, not sparse rows; pass None or False")
        return QuantizedEmbeddingMLP(model, dtype, calibration, backend)
    if isinstance(model, MLP):
        return QuantizedMLP(model, dtype, calibration, backend, sparse_input=bool(sparse_input))
    for attribute in ("network", "network_"):  # Sequential / the estimators / TextClassifier
        network = getattr(model, attribute, None)
        if isinstance(network, MLP):
            front = copy.copy(model)  # shallow: the quantized copy shares nothing it could change
            setattr(front, attribute, quantize(network, dtype, calibration, backend, sparse_input))
            return front
    raise TypeError(f"model: expected a built MLP, Sequential, MLPClassifier, MLPRegressor or fitted "
                    f"TextClassifier, got {type(model).__name__}")

