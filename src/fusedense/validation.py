"""Input checks, done once in Python before any compiled code runs.

Every error names the argument, what it got and what was expected.
"""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _describe(a) -> str:
    return f"array of shape {a.shape} and dtype {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__


def common_float_dtype(**arrays) -> np.dtype:
    """The float dtype shared by the ndarray arguments (float64 if none is an ndarray).

    Mixed float32/float64 is an error: fusedense never converts silently.
    """
    dtype = first = None
    for name, a in arrays.items():
        if isinstance(a, np.ndarray):
            if a.dtype not in FLOAT_DTYPES:
                check_float_dtype(name, a)  # raises
            if dtype is None:
                dtype, first = a.dtype, name
            elif a.dtype != dtype:
                raise TypeError(
                    f"{name}: dtype {a.dtype} does not match {first} ({dtype}); pass arrays of one float "
                    f"dtype (convert with .astype(np.float32) or .astype(np.float64))")
    return np.dtype(np.float64) if dtype is None else dtype


def check_float_dtype(name, a: np.ndarray) -> None:
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {a.dtype}")


def _refuse_masked(name, a) -> None:
    """np.asarray keeps a masked array's data and drops its mask: the masked values would be used."""
    masked = np.ma.getmaskarray(a) if isinstance(a, np.ma.MaskedArray) else None
    if masked is not None and masked.any():
        raise ValueError(f"{name}: a masked array with {int(masked.sum())} masked value(s); "
                         f"fusedense would read the values under the mask: fill them first (x.filled(value))")


def as_numeric_array(name, a) -> np.ndarray:
    """``a`` as an ndarray of real numbers (bool, integer or float values)."""
    _refuse_masked(name, a)
    try:
        arr = np.asarray(a)
    except Exception as exc:
        raise TypeError(f"{name}: expected an array-like of numbers, got {type(a).__name__}: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected numbers, got values of dtype {arr.dtype}")
    return arr


def as_float_array(name, a, dtype: np.dtype, ndim=None, min_ndim=None) -> np.ndarray:
    """``a`` as a C-contiguous array of ``dtype`` (array-likes are converted; ndarrays must
    already have it). Non-contiguous arrays are copied once."""
    if (type(a) is np.ndarray and a.dtype == dtype and a.flags.c_contiguous
            and (ndim is None or a.ndim == ndim) and (min_ndim is None or a.ndim >= min_ndim)):
        return a  # the common case: nothing to convert or report
    if not isinstance(a, np.ndarray):
        a = as_numeric_array(name, a).astype(dtype)
    else:
        _refuse_masked(name, a)
        check_float_dtype(name, a)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got {_describe(a)}")
    if min_ndim is not None and a.ndim < min_ndim:
        raise ValueError(f"{name}: expected an array with at least {min_ndim} dimension(s), got {_describe(a)}")
    return np.asarray(a, order="C")  # (ascontiguousarray would turn 0-d into 1-d)


def as_labels(name, labels, n_rows: int, n_classes: int) -> np.ndarray:
    """Integer class labels of shape (n_rows,) in [0, n_classes), as int64."""
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class labels, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ValueError(f"{name}: expected shape ({n_rows},) (one label per row), got shape {arr.shape}")
    if n_rows:
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi >= n_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name}: labels must lie in [0, {n_classes}), got {bad}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def check_nonempty(name, a: np.ndarray) -> None:
    if a.size == 0:
        raise ValueError(f"{name}: expected a non-empty array, got {_describe(a)}")


def check_shape(name, a: np.ndarray, expected: tuple, meaning: str = "") -> None:
    if a.shape != tuple(expected):
        extra = f" ({meaning})" if meaning else ""
        raise ValueError(f"{name}: expected shape {tuple(expected)}{extra}, got shape {a.shape}")


def check_out(out, shape: tuple, dtype: np.dtype) -> None:
    """``out`` must be a writeable ndarray of exactly the result's shape and dtype."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a numpy array, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out: expected dtype {dtype}, got dtype {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"out: expected shape {tuple(shape)}, got shape {out.shape}")
    if not out.flags.writeable:
        raise ValueError("out: the array is read-only; pass a writeable array")


def check_positive_int(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value}")
    return int(value)
