"""``EmbeddingMLP``: a token embedding in front of a dense stack (Bengio et al. 2003 language model).

Inputs are ``context`` token ids per row. Each id picks a row of the embedding table
``E`` (vocab_size × dim); the ``context`` rows, concatenated, are the first Dense layer's input.

    >>> net = EmbeddingMLP(27, 10, 3, [200, 27], "tanh", random_state=0)
    >>> net.set_optimizer("adam")
    >>> loss = net.train_step(contexts, next_tokens, loss="sparse_categorical_crossentropy")
    >>> names = net.generate(10, max_len=20, temperature=0.8, seed=0)

Parameters: ``E`` lives at the front of the ONE flat buffer, the dense layers after it
(``layout`` offsets start at ``vocab_size·dim``), so the kernels run the dense stack on the
gathered features exactly as ``mlp_forward`` would, and one optimizer pass updates everything.

Every operation is ONE backend call (the ``embedding_*`` kernels, see ``fusedense._backends``):
``forward`` gathers the table rows inside the kernel; ``fused_step`` = gather → forward →
softmax cross-entropy → backward down to the first layer's input → scatter-add into the
table's gradient rows (never a one-hot matmul) → one optimizer pass over the whole buffer;
``generate`` runs the whole batched sampling loop (uniforms drawn in Python from the seed).

Folding the table into the first layer (T_p = E @ W1[p·dim:(p+1)·dim], so the first GEMM
becomes ``context`` row lookups and a sum) was measured and removed: in Python the lookups cost
more than the small GEMM they replace (3× slower at batch 1, no faster at batch 256), and compiled
into the kernels (tables built per call from batch ≥ vocab_size on) it was within ±10% of the
gather + GEMM at batch 32-1024 and in generation — the output layer and the activation
dominate, not the first product.
"""
from __future__ import annotations

import math

import numpy as np

from . import abi
from .activations import get_activation
from .gate import checked_record
from .layout import ACT_ID
from .network import MLP

__all__ = ["EmbeddingMLP"]

_IDENTITY, _SOFTMAX, _LOG_SOFTMAX = (get_activation(name).id for name in ("identity", "softmax", "log_softmax"))
_EMBEDDING_LIMIT = 0.05  # Keras's default embeddings_initializer: uniform(-0.05, 0.05)


class EmbeddingMLP(MLP):
    """Embedding(vocab_size, dim) of ``context`` tokens → Dense layers ``sizes`` (hidden..., outputs).

    activations / output_activation / alphas / init / dtype / random_state / backend: as for
    :class:`fusedense.MLP`. Training supports the sparse categorical cross-entropy only (the
    output layer's activation must be 'softmax' or 'identity' = logits).
    """

    def __init__(self, vocab_size, embedding_dim, context, sizes, activations="tanh",
                 output_activation="identity", alphas=None, dtype=np.float32, init="glorot_uniform",
                 random_state=None, backend=None, penalties=None, dropout=None, dropout_seeds=None):
        for name, value in (("vocab_size", vocab_size), ("embedding_dim", embedding_dim), ("context", context)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        self.vocab_size, self.embedding_dim, self.context = int(vocab_size), int(embedding_dim), int(context)
        super().__init__([self.context * self.embedding_dim] + [int(s) for s in sizes], activations,
                         output_activation, alphas, dtype, init, random_state, backend,
                         prefix=self.vocab_size * self.embedding_dim, penalties=penalties, dropout=dropout,
                         dropout_seeds=dropout_seeds)

    # --- structure ------------------------------------------------------------------------

    @property
    def n_inputs(self) -> int:
        """Tokens per input row (the context length)."""
        return self.context

    @property
    def embeddings(self) -> np.ndarray:
        """The embedding table (vocab_size × dim): a view into ``params``."""
        return self.params[:self.vocab_size * self.embedding_dim].reshape(self.vocab_size, self.embedding_dim)

    def weight_arrays(self):
        """``[E, W1, b1, W2, b2, ...]`` (Keras order: the Embedding layer's table first)."""
        return [self.embeddings] + super().weight_arrays()

    def initialize(self, init="glorot_uniform", random_state=None):
        rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
        super().initialize(init, rng)
        self.embeddings[...] = rng.uniform(-_EMBEDDING_LIMIT, _EMBEDDING_LIMIT, self.embeddings.shape)

    def __repr__(self):
        layers = " → ".join(str(s) for s in self.sizes[1:])
        return (f"EmbeddingMLP(vocab {self.vocab_size} × dim {self.embedding_dim}, context {self.context} → "
                f"{layers}, activations={list(self.activations)}, dtype={self.dtype}, backend={self.backend!r})")

    def architecture(self) -> dict:
        return {**super().architecture(), "sizes": list(self.sizes[1:]),
                "embedding": {"vocab_size": self.vocab_size, "dim": self.embedding_dim, "context": self.context}}

    @classmethod
    def from_architecture(cls, record: dict, backend=None) -> "EmbeddingMLP":
        emb = record["embedding"]
        return cls(emb["vocab_size"], emb["dim"], emb["context"], record["sizes"], record["activations"],
                   alphas=record["alphas"], dtype=record["dtype"], backend=backend, dropout=record.get("dropout"),
                   dropout_seeds=record.get("dropout_seeds"), penalties=record.get("penalties"))

    # --- inference -------------------------------------------------------------------------

    def as_inputs(self, x, name="x") -> np.ndarray:
        """``x`` as a C-contiguous (n, context) int64 array of token ids in [0, vocab_size)."""
        if (type(x) is np.ndarray and x.dtype == np.int64 and x.ndim == 2 and x.shape[1] == self.context
                and x.shape[0] and x.flags.c_contiguous):
            tokens = x
        else:
            tokens = np.asarray(x)
            if tokens.dtype.kind not in "iu" and not (tokens.dtype.kind == "f" and np.array_equal(tokens, np.round(tokens))):
                raise TypeError(f"{name}: expected integer token ids, got values of dtype {tokens.dtype}")
            if tokens.ndim != 2 or tokens.shape[1] != self.context or tokens.shape[0] == 0:
                raise ValueError(f"{name}: expected shape (n_samples, {self.context}) (one row of {self.context} "
                                 f"context token ids per sample, n_samples >= 1), got shape {tokens.shape}")
            tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        low, high = tokens.min(), tokens.max()
        if low < 0 or high >= self.vocab_size:
            raise ValueError(f"{name}: token ids must be in [0, {self.vocab_size}), got values in [{low}, {high}]")
        return tokens

    def _forward(self, tokens, out):
        """The outputs for checked ``tokens``: ONE backend call that gathers the embedding rows and
        runs every layer."""
        self.engine.embedding_forward(tokens, self.params, self._layers, self.vocab_size, out)

    # --- training ----------------------------------------------------------------------------

    def _train_kernel(self, tokens, labels, loss_id, outputs) -> float:
        """One minibatch update from checked ``tokens`` (n, context) and int64 ``labels`` (n,) in ONE
        backend call (gather, forward, softmax cross-entropy, backward, scatter-add into the
        table's gradient rows, optimizer over the whole buffer); ``fused_step`` calls it."""
        if loss_id != abi.LOSS_SPARSE_XENT:
            raise ValueError("loss: an EmbeddingMLP trains with 'sparse_categorical_crossentropy' only")
        return self.engine.embedding_train_step(tokens, labels, self.params, self.grads, self.opt_state,
                                                  self._layers, self._hyper, self.vocab_size, outputs)

    # --- generation --------------------------------------------------------------------------

    def generate(self, n=1, max_len=30, temperature=1.0, seed=None, boundary=0):
        """``n`` token sequences sampled autoregressively in ONE backend call (all rows at once).

        Every sequence starts from a context of ``boundary`` tokens and ends when it samples
        ``boundary`` (not included) or reaches ``max_len`` tokens. ``temperature`` divides the
        logits (0: always the most likely token). The uniforms are drawn up front from
        ``np.random.default_rng(seed)``, one per (sequence, step): same seed, same weights → same
        sequences on every backend. ``seed`` may also be a ``np.random.Generator``, which then
        advances (a loop of one-sequence calls need not build a generator per call: that costs
        more than a few tokens). Returns a list of ``n`` int64 arrays.
        """
        uniforms = self._sampling_uniforms(n, max_len, temperature, seed, boundary)
        tokens = np.empty((n, max_len), np.int64)
        lengths = np.empty(n, np.int64)
        self.engine.embedding_generate(self.params, self._logits_layers(), self.vocab_size, self.context,
                                         uniforms, float(temperature), int(boundary), tokens, lengths)
        return [tokens[i, :lengths[i]] for i in range(n)]

    def _sampling_uniforms(self, n, max_len, temperature, seed, boundary):
        """The (n, max_len) uniforms of ``generate`` after checking its arguments."""
        for name, value in (("n", n), ("max_len", max_len)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if isinstance(boundary, bool) or not isinstance(boundary, (int, np.integer)) or not 0 <= boundary < self.vocab_size:
            raise ValueError(f"boundary: expected a token id in [0, {self.vocab_size}), got {boundary!r}")
        if self.sizes[-1] != self.vocab_size:
            raise ValueError(f"generate: the output layer has {self.sizes[-1]} units; sampling feeds each token "
                             f"back as input, so it needs one unit per vocabulary token ({self.vocab_size})")
        if not isinstance(temperature, (int, float, np.integer, np.floating)) or not 0 <= temperature < math.inf:
            raise ValueError(f"temperature: expected a finite number >= 0, got {temperature!r}")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return rng.random((n, max_len))

    def _logits_layers(self):
        """The layer record with a softmax/log_softmax output read as logits (the identity):
        sampling from softmax(log p / T) is sampling from softmax(z / T)."""
        if self.layers[-1]["activation"] not in (_SOFTMAX, _LOG_SOFTMAX):
            return self.layers
        layout = self.layout.copy()
        layout[-1, ACT_ID] = _IDENTITY
        return checked_record(layout, self.alphas, self.n_params)
