"""Text → fixed-width feature vectors by hashing n-grams (no vocabulary to fit or store).

Each n-gram's UTF-8 bytes are hashed with 32-bit FNV-1a (stable across runs and machines,
unlike Python's salted ``hash``) into one of ``n_features`` buckets; a row holds the counts,
L2-normalised by default. Character n-grams are byte n-grams of the text padded with one space
at each end (so ``" an"`` marks a word start and ``"na "`` an ending); the hashing runs
vectorised over all texts at once.

    >>> vec = HashingVectorizer(n_features=1024, analyzer="char", ngram_range=(1, 3))
    >>> X = vec.transform(["anna", "otto"])            # (2, 1024) float32
    >>> HashingVectorizer(n_features=2**20).transform(["anna"])   # SciPy CSR: sparse by default

``sparse``: True gives a SciPy ``csr_matrix`` (sorted, de-duplicated indices, int32 or int64
as SciPy picks), False a dense array, None (the default) sparse once ``n_features`` exceeds
:data:`DENSE_MAX_FEATURES`: a dense row of 2^20 floats is 4 MB, a text's row has a few hundred
non-zeros.
"""
from __future__ import annotations

import re

import numpy as np

__all__ = ["HashingVectorizer", "fnv1a_32"]

_FNV_OFFSET = np.uint64(2166136261)
_FNV_PRIME = np.uint64(16777619)
_MASK32 = np.uint64(0xFFFFFFFF)
_WORD = re.compile(r"\w+", re.UNICODE)
_ROWS_PER_CHUNK = 4096  # bounds the size of the count matrix built at once
#: Widest output that ``sparse=None`` still returns dense.
DENSE_MAX_FEATURES = 2**16


def fnv1a_32(buffer: np.ndarray, starts: np.ndarray, lengths) -> np.ndarray:
    """FNV-1a (32-bit) of the byte runs ``buffer[starts[i] : starts[i] + lengths[i]]``.

    ``lengths`` is an array or one int for all runs. Same value as the byte-at-a-time definition
    ``h = 2166136261; for byte: h = (h ^ byte) * 16777619 mod 2**32``.
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.broadcast_to(np.asarray(lengths, dtype=np.int64), starts.shape)
    h = np.full(starts.shape, _FNV_OFFSET, dtype=np.uint64)
    for k in range(int(lengths.max(initial=0))):
        active = lengths > k
        byte = buffer[np.where(active, starts + k, 0)].astype(np.uint64)
        h = np.where(active, ((h ^ byte) * _FNV_PRIME) & _MASK32, h)
    return h.astype(np.uint32)


class HashingVectorizer:
    """Hashed n-gram counts. analyzer: 'char' (byte n-grams) or 'word' (n-grams of \\w+ tokens).

    Not scikit-learn's HashingVectorizer, though close in use: its defaults suit short strings
    (n_features 2**12, analyzer 'char', ngram_range (1, 3), float32), counts are never signed
    (scikit-learn's ``alternate_sign=False``), the hash is FNV-1a (scikit-learn: murmur3, so
    buckets differ), ``norm`` is 'l2' or None, and the output is dense up to 2**16 features
    (``sparse=None``; scikit-learn's is always CSR). Pass ``sparse=True`` for CSR at any size."""

    def __init__(self, n_features=2**12, analyzer="char", ngram_range=(1, 3), lowercase=True,
                 norm="l2", dtype=np.float32, sparse=None):
        if analyzer not in ("char", "word"):
            raise ValueError(f"analyzer: expected 'char' or 'word', got {analyzer!r}")
        lo, hi = ngram_range
        if not 1 <= lo <= hi:
            raise ValueError(f"ngram_range: expected (min_n, max_n) with 1 <= min_n <= max_n, got {ngram_range!r}")
        if norm not in ("l2", None):
            raise ValueError(f"norm: expected 'l2' or None, got {norm!r}")
        if int(n_features) < 1:
            raise ValueError(f"n_features: expected a positive integer, got {n_features!r}")
        self.n_features, self.analyzer, self.ngram_range = int(n_features), analyzer, (int(lo), int(hi))
        if sparse not in (None, True, False):
            raise ValueError(f"sparse: expected True, False or None (sparse for n_features > "
                             f"{DENSE_MAX_FEATURES}), got {sparse!r}")
        self.lowercase, self.norm, self.dtype, self.sparse = lowercase, norm, np.dtype(dtype), sparse

    @property
    def emits_sparse(self) -> bool:
        """Whether transform returns SciPy CSR (``sparse``, or None and a wide output)."""
        return self.n_features > DENSE_MAX_FEATURES if self.sparse is None else bool(self.sparse)

    def fit(self, texts=None, y=None):
        return self  # stateless: nothing to learn

    def fit_transform(self, texts, y=None):
        return self.transform(texts)

    def transform(self, texts):
        """(len(texts), n_features) hashed n-gram counts (L2-normalised rows if norm='l2'): a
        dense array, or a SciPy CSR matrix when :attr:`emits_sparse`."""
        if isinstance(texts, str):
            raise TypeError("texts: expected a list of strings, got one string (wrap it in a list)")
        texts = [t.lower() if self.lowercase else t for t in texts]
        if self.emits_sparse:
            return self._transform_sparse(texts)
        out = np.zeros((len(texts), self.n_features), dtype=self.dtype)
        for start in range(0, len(texts), _ROWS_PER_CHUNK):
            chunk = texts[start:start + _ROWS_PER_CHUNK]
            rows, buckets = self._grams(chunk)
            counts = np.bincount(rows * self.n_features + buckets, minlength=len(chunk) * self.n_features)
            out[start:start + len(chunk)] = counts.reshape(len(chunk), self.n_features)
        if self.norm == "l2":
            norms = np.sqrt((out.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
            out /= np.maximum(norms, 1e-12).astype(self.dtype)
        return out

    def _grams(self, texts):
        return (self._char_grams if self.analyzer == "char" else self._word_grams)(texts)

    def _transform_sparse(self, texts):
        """The same counts as CSR, built from the (row, bucket) pairs: no dense row ever exists."""
        import scipy.sparse  # lazily: only sparse output needs SciPy here

        parts = []
        for start in range(0, len(texts), _ROWS_PER_CHUNK):
            chunk = texts[start:start + _ROWS_PER_CHUNK]
            rows, buckets = self._grams(chunk)
            parts.append(scipy.sparse.csr_matrix(
                (np.ones(rows.size, self.dtype), (rows, buckets)), shape=(len(chunk), self.n_features)))
        X = scipy.sparse.vstack(parts, format="csr") if parts else scipy.sparse.csr_matrix(
            (0, self.n_features), dtype=self.dtype)
        X.sum_duplicates()  # counts: repeated n-grams of a row add up, indices sorted
        X = X.astype(self.dtype, copy=False)
        if self.norm == "l2":
            from .sparse import divide_rows

            divide_rows(X, "l2")
        return X

    def _buckets(self, buffer, starts, lengths):
        return (fnv1a_32(buffer, starts, lengths) % np.uint32(self.n_features)).astype(np.int64)

    def _char_grams(self, texts):
        """(row of each n-gram, its bucket) for byte n-grams that stay inside one padded text."""
        encoded = [b" " + t.encode("utf-8", "replace") + b" " for t in texts]
        lengths = np.array([len(e) for e in encoded], dtype=np.int64)
        ends = np.cumsum(lengths)
        buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        row_of_byte = np.repeat(np.arange(len(texts)), lengths)
        rows, buckets = [], []
        for n in range(self.ngram_range[0], self.ngram_range[1] + 1):
            starts = np.arange(max(buffer.size - n + 1, 0))
            starts = starts[starts + n <= ends[row_of_byte[starts]]]  # n-gram ends inside its own text
            rows.append(row_of_byte[starts])
            buckets.append(self._buckets(buffer, starts, n))
        return np.concatenate(rows), np.concatenate(buckets)

    def _word_grams(self, texts):
        grams, rows = [], []
        lo, hi = self.ngram_range
        for row, text in enumerate(texts):
            words = _WORD.findall(text)
            for n in range(lo, hi + 1):
                for i in range(len(words) - n + 1):
                    grams.append(" ".join(words[i:i + n]).encode("utf-8", "replace"))
                    rows.append(row)
        lengths = np.array([len(g) for g in grams], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if grams else np.zeros(0, np.int64)
        buffer = np.frombuffer(b"".join(grams), dtype=np.uint8)
        return np.array(rows, dtype=np.int64), self._buckets(buffer, starts, lengths)
