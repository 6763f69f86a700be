"""``fd.TextClassifier``: fastText's supervised model on fusedense's fused sparse layer.

Each text becomes a bag of hashed word n-grams and character n-grams (one bucket space of
``n_features`` = 2^20 by default, :class:`fusedense.hashing.HashingVectorizer`); the bag is
averaged (``bag="mean"``, fastText's choice), summed or L2-normalised into CSR values. The
network is ``n_features → dim`` (identity: an averaged embedding) ``→ [hidden →] classes``
(softmax), trained by ``sparse_train_step``: only the embedding rows a batch uses are read and
updated. Optimizers: lazy Adagrad (the default), SGD or lazy Adam, each with fastText's linear
learning-rate decay to 0 over the run unless ``lr_decay=None``.

Why Adagrad in large batches by default: on fortunes language ID (bench/bench_text.py,
docs/performance-notes.md "Sparse input") batched SGD trained the rarely seen n-gram rows too
slowly (0.81 accuracy at 5 epochs where fastText's per-example SGD reached 0.99), while
Adagrad's per-row step sizes reach 0.99 at any batch size; large batches merge the n-grams
that examples share, so each step updates fewer distinct rows per example.

    >>> clf = fd.TextClassifier(dim=32, epochs=5).fit(texts, labels)
    >>> clf.predict(["Das ist ein Satz."]), clf.score(test_texts, test_labels)
"""
from __future__ import annotations

import numpy as np

from . import abi
from . import optimizers as _optimizers
from .hashing import HashingVectorizer
from .network import MLP
from .sparse import CSR, as_csr, divide_rows

__all__ = ["TextClassifier"]

_BAGS = ("mean", "sum", "l2")


class TextClassifier:
    """fastText-like text classification (see the module docstring).

    dim: embedding width; hidden: widths of hidden relu layers between the bag and the output
    (() is fastText's linear model); word_ngrams / char_ngrams: (min_n, max_n) ranges or None;
    learning_rate: per example for SGD (the step on a batch's mean loss is learning_rate ·
    batch_size, as batch_size single-example steps would add up), as given for the others;
    lr_decay: "linear" (fastText: lr·(1 − progress)) or None.
    """

    def __init__(self, dim=64, hidden=(), n_features=2**20, word_ngrams=(1, 2), char_ngrams=(2, 4), bag="mean",
                 epochs=5, batch_size=1024, learning_rate=0.5, optimizer="adagrad", lr_decay="linear",
                 dtype=np.float32, random_state=0, backend=None):
        if bag not in _BAGS:
            raise ValueError(f"bag: expected one of {_BAGS}, got {bag!r}")
        if word_ngrams is None and char_ngrams is None:
            raise ValueError("word_ngrams, char_ngrams: expected at least one n-gram range, got None for both")
        if optimizer not in ("sgd", "adagrad", "adam"):
            raise ValueError(f"optimizer: expected 'sgd', 'adagrad' or 'adam', got {optimizer!r}")
        if lr_decay not in ("linear", None):
            raise ValueError(f"lr_decay: expected 'linear' or None, got {lr_decay!r}")
        for name, value in (("dim", dim), ("epochs", epochs), ("batch_size", batch_size), ("n_features", n_features)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        self.dim, self.hidden, self.n_features = int(dim), tuple(int(h) for h in hidden), int(n_features)
        self.word_ngrams, self.char_ngrams, self.bag = word_ngrams, char_ngrams, bag
        self.epochs, self.batch_size, self.learning_rate = int(epochs), int(batch_size), float(learning_rate)
        self.optimizer, self.lr_decay, self.dtype = optimizer, lr_decay, np.dtype(dtype)
        self.random_state, self.backend = random_state, backend
        self._vectorizers = [HashingVectorizer(self.n_features, analyzer, ngram_range=ngrams, norm=None,
                                               dtype=self.dtype, sparse=True)
                             for analyzer, ngrams in (("word", word_ngrams), ("char", char_ngrams)) if ngrams]

    # --- features ----------------------------------------------------------------------------------

    def transform(self, texts) -> CSR:
        """The texts' bags as CSR rows (word and character n-grams in one bucket space)."""
        if isinstance(texts, str):
            raise TypeError("texts: expected a list of strings, got one string (wrap it in a list)")
        texts = list(texts)
        if not texts:
            raise ValueError("texts: expected at least one text, got none")
        X = self._vectorizers[0].transform(texts)
        for vectorizer in self._vectorizers[1:]:
            X = X + vectorizer.transform(texts)
        X = X.tocsr()
        X.sum_duplicates()
        if self.bag != "sum":  # "mean": fastText averages the n-gram embeddings
            divide_rows(X, "l2" if self.bag == "l2" else "sum")
        return as_csr(X, self.dtype)

    # --- training -------------------------------------------------------------------------------

    def fit(self, texts, labels):
        """Trains from scratch on ``texts`` (strings) and ``labels`` (any hashable class labels)."""
        X = self.transform(texts)
        labels = np.asarray(labels)
        if labels.shape != (X.shape[0],):
            raise ValueError(f"labels: expected one label per text, shape ({X.shape[0]},), got shape {labels.shape}")
        self.classes_, y = np.unique(labels, return_inverse=True)
        return self.fit_transformed(X, y.astype(np.int64))

    def fit_transformed(self, X, y):
        """fit on bags that :meth:`transform` made and labels already coded 0..n_classes-1 (the
        benchmark times training apart from featurising)."""
        if not hasattr(self, "classes_"):
            self.classes_ = np.arange(int(y.max()) + 1)
        rng = np.random.default_rng(self.random_state)
        sizes = [self.n_features, self.dim, *self.hidden, len(self.classes_)]
        activations = ["identity"] + ["relu"] * len(self.hidden) + ["softmax"]
        # fastText's initialisation: the table uniform in ±1/dim, the output matrix zero; hidden
        # layers Glorot. The table is drawn in place: a float64 temporary would double the peak.
        inits = ["zeros"] + ["glorot_uniform"] * len(self.hidden) + ["zeros"]
        net = MLP(sizes, activations, dtype=self.dtype, init=inits, random_state=rng, backend=self.backend)
        W0, _ = net.weights[0]
        rng.random(out=W0, dtype=W0.dtype)
        W0 *= 2.0 / self.dim
        W0 -= 1.0 / self.dim
        net.set_optimizer(self._make_optimizer())
        self.network_ = net
        n, batch = X.shape[0], min(self.batch_size, X.shape[0])
        total_steps = self.epochs * -(-n // batch)
        self.loss_curve_ = []
        step = 0
        for _ in range(self.epochs):
            order = rng.permutation(n)
            total = 0.0
            for start in range(0, n, batch):
                rows = order[start:start + batch]
                if self.lr_decay == "linear":
                    net.optimizer.learning_rate = self._base_lr * (1.0 - step / total_steps)
                    net.refresh_hyperparameters()
                total += net.fused_step(X.take(rows), y[rows], abi.LOSS_SPARSE_XENT) * len(rows)
                step += 1
            self.loss_curve_.append(total / n)
        return self

    @property
    def _base_lr(self):
        return self.learning_rate * self.batch_size if self.optimizer == "sgd" else self.learning_rate

    def _make_optimizer(self):
        if self.optimizer == "sgd":
            return _optimizers.SGD(self._base_lr)
        if self.optimizer == "adagrad":
            return _optimizers.Adagrad(self._base_lr)
        return _optimizers.Adam(self._base_lr)

    # --- prediction ----------------------------------------------------------------------------

    def predict_proba(self, texts) -> np.ndarray:
        """(n_texts, n_classes) class probabilities, columns in the order of ``classes_``."""
        if not hasattr(self, "network_"):
            raise RuntimeError("predict: fit the classifier first")
        return self.network_.predict(self.transform(texts))

    def predict(self, texts) -> np.ndarray:
        proba = self.predict_proba(texts)
        return self.classes_[proba.argmax(axis=1)]

    def score(self, texts, labels) -> float:
        """Accuracy on ``(texts, labels)``."""
        return float(np.mean(self.predict(texts) == np.asarray(labels)))
