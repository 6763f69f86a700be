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
"""
from __future__ import annotations

import copy

import numpy as np

from . import _backends, reference
from .activations import BY_ID, get_activation, resolve_alpha
from .embedding import EmbeddingMLP
from .gate import checked_quantized_record
from .layout import GROUP, QUANT_INT8, QUANT_KINDS, pack_panels, quantized_layer_views, quantized_layout
from .network import MLP

__all__ = ["quantize", "QuantizedMLP", "QuantizedEmbeddingMLP"]


def quantize_weights_int8(W):
    """(q int8 (k, n), scales float32 (n,)): symmetric per-column codes, W ≈ q · scales."""
    W = np.asarray(W, np.float32)
    amax = np.abs(W).max(axis=0)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, reference.INT8_MAX / amax, np.float32(0)).astype(np.float32)
    q = np.clip(np.rint(W * inv), -127, 127).astype(np.int8)
    return q, (amax / reference.INT8_MAX).astype(np.float32)


def _layer_inputs(network, x):
    """The float input of every layer of ``network`` for rows ``x`` (token rows for an
    EmbeddingMLP; the calibration pass)."""
    h = network.as_inputs(x, "calibration")
    if isinstance(network, EmbeddingMLP):
        h = network.embeddings[h].reshape(len(h), -1)
    h = h.astype(np.float64)
    inputs = []
    for (W, b), layer in zip(network.weights, network.layers):
        inputs.append(h)
        h = BY_ID[layer["activation"]].forward(h @ W + b, layer["alpha"])
    return inputs


class QuantizedMLP:
    """An int8 or bf16 copy of an :class:`fusedense.MLP` for inference (see the module docstring)."""

    dtype = np.dtype(np.float32)

    def __init__(self, network: MLP, dtype="int8", calibration=None, backend=None):
        if dtype not in QUANT_KINDS:
            raise ValueError(f"dtype: expected 'int8' or 'bf16', got {dtype!r}")
        kind = QUANT_KINDS[dtype]
        if calibration is not None and kind != QUANT_INT8:
            raise ValueError("calibration: only int8 has activation scales to calibrate; pass None for bf16")
        amaxes = [0.0] * len(network.activations)
        if calibration is not None:
            amaxes = [float(np.float32(np.abs(h).max())) for h in _layer_inputs(network, calibration)]
            if not all(np.isfinite(amaxes)):
                raise ValueError("calibration: the sample gives non-finite activations; pass finite rows")
        regions, n_bytes = quantized_layout(network.sizes, kind)
        qbuffer = np.zeros(n_bytes, np.uint8)
        for (W, b), (w_at, s_at, b_at, c_at, k_pad, n_pad) in zip(network.weights, regions):
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

    def _adopt(self, architecture, dtype, amaxes, qbuffer, backend):
        """Takes ``qbuffer`` as the network's buffer: builds and registers its checked record."""
        self.qdtype, self.qbuffer = dtype, qbuffer
        self.sizes, self.activations = tuple(architecture["sizes"]), tuple(architecture["activations"])
        kind = QUANT_KINDS[dtype]
        regions, n_bytes = quantized_layout(self.sizes, kind)
        rows = []
        for l, (w_at, s_at, b_at, c_at, k_pad, n_pad) in enumerate(regions):
            activation = get_activation(self.activations[l])
            rows.append((w_at, s_at, b_at, c_at, self.sizes[l], self.sizes[l + 1], k_pad, n_pad, activation.id,
                         kind, resolve_alpha(activation, architecture["alphas"][l]), amaxes[l]))
        self.qlayers = checked_quantized_record(rows, qbuffer.size)
        self.set_backend(backend)

    @classmethod
    def from_buffer(cls, architecture: dict, dtype: str, amaxes, qbuffer: np.ndarray, backend=None):
        """The quantized network of ``architecture`` (MLP.architecture()'s record) whose buffer is
        ``qbuffer`` (uint8, as ``quantized_layout`` lays it out) and whose int8 activation
        scales are ``amaxes`` (one per layer, 0: dynamic); for fusedense.io."""
        model = cls.__new__(cls)
        model._adopt(architecture, dtype, list(amaxes), qbuffer, backend)
        return model

    def architecture(self) -> dict:
        """As MLP.architecture (dtype float32, what the quantized network computes in)."""
        return {"sizes": list(self.sizes), "activations": list(self.activations),
                "alphas": [float(a) if get_activation(name).has_alpha else None
                           for a, name in zip(self.qlayers["alpha"], self.activations)], "dtype": "float32"}

    # --- structure (as MLP's) -------------------------------------------------------------

    n_inputs, n_outputs, output_activation = MLP.n_inputs, MLP.n_outputs, MLP.output_activation

    @property
    def nbytes(self) -> int:
        """Bytes of the quantized weights, scales and biases."""
        return self.qbuffer.nbytes

    def dequantized_weights(self):
        """``[(W, b), ...]`` float32: the values the quantized layers multiply by."""
        pairs = []
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
        return state

    def __setstate__(self, state):
        state = dict(state)
        backend, record = state.pop("engine"), state.pop("qlayers")
        self.__dict__.update(state)
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
        self.engine.quantized_mlp_forward(x, self.qbuffer, self.qlayers, out)

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


def quantize(model, dtype="int8", calibration=None, backend=None):
    """An int8 or bf16 copy of ``model`` for inference; ``model`` itself is not changed.

    model: an :class:`fusedense.MLP` (gives a :class:`QuantizedMLP`), an
    :class:`fusedense.EmbeddingMLP` (a :class:`QuantizedEmbeddingMLP`, which also generates), or a
    front holding one —
    a :class:`fusedense.Sequential` or an ``MLPClassifier`` / ``MLPRegressor`` (gives a copy of
    the front whose network is quantized: ``predict``, ``predict_proba``, ``evaluate``, ``score``
    work as before).
    dtype: ``"int8"`` (symmetric per-column weights, per-row dynamic activation scales) or
    ``"bf16"`` (round to nearest even).
    calibration: int8 only: sample rows (n, n_inputs); each layer's activation scale is then the
    largest |input| of that layer over the sample (static), instead of each row's own.
    backend: the engine of the quantized model (default: the model's).
    """
    if isinstance(model, EmbeddingMLP):
        return QuantizedEmbeddingMLP(model, dtype, calibration, backend)
    if isinstance(model, MLP):
        return QuantizedMLP(model, dtype, calibration, backend)
    for attribute in ("network", "network_"):  # Sequential / the scikit-learn estimators
        network = getattr(model, attribute, None)
        if isinstance(network, MLP):
            front = copy.copy(model)  # shallow: the quantized copy shares nothing it could change
            setattr(front, attribute, quantize(network, dtype, calibration, backend))
            return front
    raise TypeError(f"model: expected a built MLP, Sequential, MLPClassifier or MLPRegressor, "
                    f"got {type(model).__name__}")

