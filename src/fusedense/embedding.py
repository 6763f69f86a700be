"""``EmbeddingMLP``: a token embedding in front of a dense stack (Bengio et al. 2003 language model).

Inputs are ``context`` token ids per row. Each id picks a row of the embedding table
``E`` (vocab_size × dim); the ``context`` rows, concatenated, are the first Dense layer's input.

    >>> net = EmbeddingMLP(27, 10, 3, [200, 27], "tanh", random_state=0)
    >>> net.set_optimizer("adam")
    >>> loss = net.train_step(contexts, next_tokens, loss="sparse_categorical_crossentropy")
    >>> names = net.generate(10, max_len=20, temperature=0.8, seed=0)

Parameters: ``E`` lives at the front of the ONE flat buffer, the dense layers after it
(``layout`` offsets start at ``vocab_size·dim``), so ``mlp_forward`` runs the dense stack on
the gathered features unchanged and one ``adam_step``/``sgd_step`` updates everything.

Training cannot use the fused ``mlp_train_step``: the embedding gradient needs dLoss/d(input of
the first layer), which that kernel does not return. The step is therefore composed of kernel
calls — a gather, ``dense_forward`` per layer, ``softmax_xent``, ``dense_backward`` per layer
(the first one with ``dx``), a scatter-add of ``dx`` into the embedding rows (never a one-hot
matmul) and one optimizer pass — so every backend runs it with the interface it already has.
(One compiled call would need a new kernel — ``mlp_train_step`` plus the gather and the
scatter-add into the table's gradient before its optimizer pass; the interface does not have it.)

Inference can fold the table into the first layer (``fold()``): for context position ``p`` the
table ``T_p = E @ W1[p·dim:(p+1)·dim]`` (vocab × hidden) turns the first GEMM into ``context``
row lookups and a sum. Measured (bench/bench_lm.py): in Python the lookups cost more calls than
the small GEMM they replace, so folding is slower at batch 1 and no faster at batch 256; it
stays opt-in.
"""
from __future__ import annotations

import math

import numpy as np

from . import abi
from .layout import ACT_ID, FAN_OUT, layer_views
from .network import MLP

__all__ = ["EmbeddingMLP", "sample_sequences"]

_IDENTITY = 0  # activation id: dense_backward of the last layer receives dLoss/dz directly
_EMBEDDING_LIMIT = 0.05  # Keras's default embeddings_initializer: uniform(-0.05, 0.05)


class EmbeddingMLP(MLP):
    """Embedding(vocab_size, dim) of ``context`` tokens → Dense layers ``sizes`` (hidden..., outputs).

    activations / output_activation / alphas / init / dtype / random_state / backend: as for
    :class:`fusedense.MLP`. Training supports the sparse categorical cross-entropy only (the
    output layer's activation must be 'softmax' or 'identity' = logits).
    """

    def __init__(self, vocab_size, embedding_dim, context, sizes, activations="tanh",
                 output_activation="identity", alphas=None, dtype=np.float32, init="glorot_uniform",
                 random_state=None, backend=None):
        for name, value in (("vocab_size", vocab_size), ("embedding_dim", embedding_dim), ("context", context)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        self.vocab_size, self.embedding_dim, self.context = int(vocab_size), int(embedding_dim), int(context)
        self._folded = None
        self._scratch = {}
        self._views_of = self._views = None
        super().__init__([self.context * self.embedding_dim] + [int(s) for s in sizes], activations,
                         output_activation, alphas, dtype, init, random_state, backend,
                         prefix=self.vocab_size * self.embedding_dim)

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
                   alphas=record["alphas"], dtype=record["dtype"], backend=backend)

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

    def embed(self, tokens, out=None) -> np.ndarray:
        """The first Dense layer's input: the embedding rows of ``tokens`` side by side (n, context·dim)."""
        n = tokens.shape[0]
        table = self._table_view()
        if out is None:  # a fancy-index gather is the cheapest call at inference batch sizes
            return table[tokens].reshape(n, self.context * self.embedding_dim)
        np.take(table, tokens, axis=0, out=out.reshape(n, self.context, self.embedding_dim))
        return out

    def forward(self, tokens, out):
        """The outputs for checked ``tokens``: a gather, then ONE fused ``mlp_forward`` (or the folded
        first layer when ``fold()`` was called)."""
        if self._folded is not None:
            self._forward_folded(tokens, out)
        else:
            self._kernels.mlp_forward(self.embed(tokens), self.params, self.layout, self.alphas, out)

    def fold(self, enable=True):
        """Precomputes ``T_p = E @ W1[p·dim:(p+1)·dim]`` (context × vocab × hidden) so the first layer
        becomes ``act(b1 + Σ_p T_p[token_p])``. The tables are a snapshot: call again after training
        (training unfolds). ``fold(False)`` goes back to gather + GEMM."""
        if not enable:
            self._folded = None
            return
        W1, _ = self.weights[0]
        blocks = W1.reshape(self.context, self.embedding_dim, -1)
        self._folded = np.ascontiguousarray(np.matmul(self.embeddings, blocks))  # (context, vocab, hidden)

    def _forward_folded(self, tokens, out):
        _, b1 = self._weight_views()[0]
        z1 = b1 + self._folded[0][tokens[:, 0]]
        for p in range(1, self.context):
            z1 += self._folded[p][tokens[:, p]]
        act_id, alpha = int(self.layout[0, ACT_ID]), float(self.alphas[0])
        if len(self.layout) == 1:
            self._kernels.activation_forward(z1, act_id, alpha, out)
            return
        h1 = np.empty_like(z1)
        self._kernels.activation_forward(z1, act_id, alpha, h1)
        self._kernels.mlp_forward(h1, self.params, self.layout[1:], self.alphas[1:], out)

    # --- training ----------------------------------------------------------------------------

    def _buffers(self, n):
        """Per-batch-size work arrays: features, (z, y) per layer, dLoss/d(input) per layer."""
        buffers = self._scratch.get(n)
        if buffers is None:
            fan_outs = [int(f) for f in self.layout[:, FAN_OUT]]
            buffers = self._scratch[n] = {
                "x": np.empty((n, self.sizes[0]), self.dtype),
                "z": [np.empty((n, f), self.dtype) for f in fan_outs],
                "y": [np.empty((n, f), self.dtype) for f in fan_outs],
                "dz_out": np.empty((n, fan_outs[-1]), self.dtype),
                "dx": [np.empty((n, f), self.dtype) for f in self.sizes[:-1]],
            }
        return buffers

    def fused_step(self, tokens, labels, loss_id) -> float:
        """One minibatch update from checked ``tokens`` (n, context) and int64 ``labels`` (n,):
        forward, softmax cross-entropy, backward into the flat gradient, optimizer; returns the loss."""
        if loss_id != abi.LOSS_SPARSE_XENT:
            raise ValueError("loss: an EmbeddingMLP trains with 'sparse_categorical_crossentropy' only")
        if self.optimizer is None:
            self.set_optimizer("adam")
        if self.grads is None:
            self.grads = np.zeros(self.n_params, self.dtype)
            self._grad_views = layer_views(self.grads, self.layout)  # (dW, db) per layer
        self._folded = None  # the folded tables would go stale
        k = self._kernels
        buf = self._buffers(tokens.shape[0])
        weights = self._weight_views()
        h = self.embed(tokens, buf["x"])
        for (W, b), (_, _, _, act_id), alpha, z, y in zip(weights, self.layout, self.alphas, buf["z"], buf["y"]):
            k.dense_forward(h, W, b, int(act_id), float(alpha), y, z)
            h = y
        loss = k.softmax_xent(buf["z"][-1], labels, buf["dz_out"])  # cross-entropy reads the logits
        dy = buf["dz_out"]
        for l in range(len(weights) - 1, -1, -1):
            act_id = _IDENTITY if l == len(weights) - 1 else int(self.layout[l, ACT_ID])
            x_in = buf["y"][l - 1] if l else buf["x"]
            dW, db = self._grad_views[l]
            k.dense_backward(dy, x_in, weights[l][0], buf["z"][l], buf["y"][l], act_id, float(self.alphas[l]),
                             buf["dx"][l], dW, db)
            dy = buf["dx"][l]
        self._scatter_embedding_grad(tokens, buf["dx"][0])
        self.step += 1
        self._hyper[abi.H_STEP] = self.step
        self._optimizer_step()
        if not math.isfinite(loss):
            raise FloatingPointError(f"training diverged: the loss became {loss} at optimizer step {self.step}; "
                                     f"lower the learning rate")
        return loss

    def _weight_views(self):
        """``self.weights``, built once per parameter buffer (a step must not pay for new views)."""
        if self._views_of is not self.params:
            self._views_of, self._views = self.params, (self.embeddings, self.weights)
        return self._views[1]

    def _table_view(self):
        """``self.embeddings``, cached like ``_weight_views``."""
        self._weight_views()
        return self._views[0]

    def _scatter_embedding_grad(self, tokens, d_features):
        """dE[v] = Σ over (row, position) with token v of dLoss/d(features[row, position]): a scatter-add.

        One ``bincount`` over flat table indices (token·dim + column): half the time of
        ``np.add.at`` at batch 64, and it sums in float64.
        """
        dim = self.embedding_dim
        flat_index = (tokens[:, :, None] * dim + np.arange(dim)).ravel()
        self.grads[:self.vocab_size * dim] = np.bincount(flat_index, weights=d_features.ravel(),
                                                          minlength=self.vocab_size * dim)

    def _optimizer_step(self):
        h, k = self._hyper, self._kernels
        if h[abi.H_OPTIMIZER] == abi.OPT_SGD:
            k.sgd_step(self.params, self.grads, self.opt_state[0], h[abi.H_LR], h[abi.H_BETA1],
                       bool(h[abi.H_NESTEROV]), h[abi.H_WEIGHT_DECAY])
        else:
            k.adam_step(self.params, self.grads, self.opt_state[0], self.opt_state[1], int(h[abi.H_STEP]),
                        h[abi.H_LR], h[abi.H_BETA1], h[abi.H_BETA2], h[abi.H_EPS], h[abi.H_WEIGHT_DECAY],
                        bool(h[abi.H_DECOUPLED]))

    # --- generation --------------------------------------------------------------------------

    def generate(self, n=1, max_len=30, temperature=1.0, seed=None, boundary=0):
        """``n`` token sequences sampled autoregressively, all rows in one forward call per step.

        Every sequence starts from a context of ``boundary`` tokens and ends when it samples
        ``boundary`` (not included) or reaches ``max_len`` tokens. ``temperature`` divides the
        logits (0: always the most likely token). Same seed, same weights → same sequences.
        Returns a list of ``n`` int64 arrays. At n=1 each token costs one batch-1 fused forward.
        """
        if not 0 <= boundary < self.vocab_size:
            raise ValueError(f"boundary: expected a token id in [0, {self.vocab_size}), got {boundary!r}")
        scores = np.empty((n, self.vocab_size), self.dtype)

        def next_scores(tokens):
            out = scores[:len(tokens)]
            self.forward(tokens, out)
            return out
        return sample_sequences(next_scores, n, self.context, max_len, temperature, seed, boundary,
                                probabilities=self.output_activation == "softmax")


def sample_sequences(next_scores, n, context, max_len, temperature, seed, boundary=0, probabilities=False):
    """Batched autoregressive sampling around any model: ``next_scores(tokens (m, context) int64)``
    returns (m, vocab) logits (or probabilities when ``probabilities``) for the rows still running;
    finished rows are dropped from the batch. See :meth:`EmbeddingMLP.generate`."""
    if not temperature >= 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature: expected a finite number >= 0, got {temperature!r}")
    rng = np.random.default_rng(seed)
    out = np.full((n, max_len), boundary, np.int64)
    lengths = np.full(n, max_len, np.int64)
    rows = np.arange(n)  # the sequences still running
    ctx = np.full((n, context), boundary, np.int64)
    for t in range(max_len):
        scores = next_scores(ctx)
        logits = np.log(scores) if probabilities else scores
        tokens = _sample(logits, temperature, rng)
        out[rows, t] = tokens
        ended = tokens == boundary
        if ended.any():
            lengths[rows[ended]] = t
            keep = ~ended
            rows, ctx, tokens = rows[keep], ctx[keep], tokens[keep]
            if not len(rows):
                break
        ctx[:, :-1] = ctx[:, 1:]
        ctx[:, -1] = tokens
    return [out[i, :lengths[i]] for i in range(n)]


def _sample(logits, temperature, rng):
    """One token per row of ``logits``: from softmax(logits / temperature), or the argmax at 0."""
    if temperature == 0:
        return logits.argmax(axis=1)
    weights = np.exp((logits - logits.max(axis=1, keepdims=True)) / temperature)
    cdf = np.cumsum(weights, axis=1)
    u = rng.random(len(cdf)) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), logits.shape[1] - 1)
