"""SciPy sparse matrices as fusedense inputs: recognised without importing SciPy, converted to
the three CSR arrays the gate and the engines take (int64 offsets and indices, values in the
model's dtype), never densified.

CSC, COO and the other formats (``*_matrix`` and ``*_array`` alike) are converted to CSR once;
duplicates and unsorted indices are kept as given (the gather-sum adds duplicates up, as
SciPy's product does). The gate checks the arrays (fusedense.gate._csr).
"""
from __future__ import annotations

import sys

import numpy as np

__all__ = ["is_sparse", "as_csr", "row_sums", "divide_rows", "CSR"]


def is_sparse(X) -> bool:
    """Whether X is a SciPy sparse matrix or array (False, without importing SciPy, when the
    caller never imported scipy.sparse: then X cannot be one)."""
    module = sys.modules.get("scipy.sparse")
    return module is not None and module.issparse(X)


class CSR:
    """A CSR batch as the engines take it: ``indptr`` and ``indices`` int64, ``data`` of one
    float dtype, ``shape`` (rows, columns). ``rows(start, stop)`` slices rows without copying
    the non-zeros more than once."""

    __slots__ = ("indptr", "indices", "data", "shape")

    def __init__(self, indptr, indices, data, shape):
        self.indptr, self.indices, self.data, self.shape = indptr, indices, data, tuple(shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def nnz(self):
        return int(self.indices.shape[0])

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        """Rows: ``X[start:stop]`` (a view of the non-zeros) or ``X[index array]`` (a copy)."""
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step == 1:
                return self.rows(start, max(start, stop))
            key = np.arange(start, stop, step)
        return self.take(key)

    def take(self, order, axis=0, out=None, mode=None):
        """The rows ``order`` (an int array), as a new CSR (a minibatch in shuffled order).
        ``axis``/``out``/``mode`` mirror ndarray.take for the training loops: the rows are
        gathered here, never into a dense buffer (``out`` is ignored)."""
        order = np.asarray(order, np.int64)
        starts, stops = self.indptr[order], self.indptr[order + 1]
        lengths = stops - starts
        indptr = np.zeros(len(order) + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # positions of every kept non-zero: each row's run, one after the other
        pos = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return CSR(indptr, self.indices[pos], self.data[pos], (len(order), self.shape[1]))

    @classmethod
    def from_dense(cls, x):
        """The CSR of a dense 2-D array's non-zeros (NaN counts as one), in row order."""
        rows, cols = np.nonzero(x)
        indptr = np.zeros(x.shape[0] + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=x.shape[0]), out=indptr[1:])
        return cls(indptr, cols.astype(np.int64), np.ascontiguousarray(x[rows, cols]), x.shape)

    def rows(self, start, stop):
        a, b = self.indptr[start], self.indptr[stop]
        return CSR(self.indptr[start:stop + 1] - a, self.indices[a:b], self.data[a:b], (stop - start, self.shape[1]))

    def to_scipy(self):
        import scipy.sparse

        return scipy.sparse.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape)


def row_sums(values, indptr) -> np.ndarray:
    """Σ of each CSR row's ``values`` in float64 (0 for an empty row, wherever it is: unlike
    np.add.reduceat, which fails on trailing empty rows and repeats a value for inner ones)."""
    counts = np.diff(indptr)
    return np.bincount(np.repeat(np.arange(counts.size), counts), weights=values, minlength=counts.size)


def divide_rows(X, total="sum"):
    """Divides each CSR row's values (of SciPy CSR or :class:`CSR`, in place) by the row's
    total: "sum" (Σ values: a bag of counts becomes its mean) or "l2" (√Σ values²). Empty rows
    stay empty. Returns X."""
    totals = row_sums(X.data.astype(np.float64) ** (2 if total == "l2" else 1), X.indptr)
    totals = np.sqrt(totals) if total == "l2" else totals
    X.data /= np.repeat(np.maximum(totals, 1e-12), np.diff(X.indptr)).astype(X.data.dtype)
    return X


def as_csr(X, dtype, name="X") -> CSR:
    """The CSR arrays of a SciPy sparse X (any format) or a :class:`CSR`, values cast to
    ``dtype`` (a copy only when needed). TypeError for anything else; ValueError for a matrix
    that is not 2-D or has no rows."""
    if isinstance(X, CSR):
        if X.dtype == dtype:
            return X
        return CSR(X.indptr, X.indices, X.data.astype(dtype), X.shape)
    if not is_sparse(X):
        raise TypeError(f"{name}: expected a SciPy sparse matrix or array, got {type(X).__name__}")
    if X.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D sparse matrix, got {X.ndim} dimensions")
    if X.format != "csr":
        X = X.tocsr()
    if X.data.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected numeric values, got dtype {X.data.dtype}")
    return CSR(np.ascontiguousarray(X.indptr, np.int64), np.ascontiguousarray(X.indices, np.int64),
               np.ascontiguousarray(X.data, dtype), X.shape)
