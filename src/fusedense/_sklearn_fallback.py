"""Minimal stand-ins for the scikit-learn utilities the estimators use, for when scikit-learn is not
installed: the same names and semantics, fewer cases (no feature names, no sparse input, no tags)."""
from __future__ import annotations

import inspect
import warnings

import numpy as np


class ConvergenceWarning(UserWarning):
    pass


class DataConversionWarning(UserWarning):
    pass


class NotFittedError(ValueError, AttributeError):
    pass


class BaseEstimator:
    """get_params / set_params from the __init__ signature, as scikit-learn's BaseEstimator."""

    @classmethod
    def _get_param_names(cls):
        return sorted(p for p in inspect.signature(cls.__init__).parameters if p != "self")

    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator {type(self).__name__}; "
                                 f"valid parameters are {valid}")
            setattr(self, name, value)
        return self

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"


class ClassifierMixin:
    _estimator_type = "classifier"

    def score(self, X, y, sample_weight=None):
        return accuracy_score(np.asarray(y), self.predict(X), sample_weight=sample_weight)


class RegressorMixin:
    _estimator_type = "regressor"

    def score(self, X, y, sample_weight=None):
        return r2_score(np.asarray(y), self.predict(X), sample_weight=sample_weight)


def accuracy_score(y, pred, sample_weight=None):
    return float(np.average(pred == y, weights=sample_weight))


def r2_score(y, pred, sample_weight=None):
    """R² averaged uniformly over outputs (scikit-learn's r2_score default)."""
    y, pred = y.reshape(len(y), -1), pred.reshape(len(pred), -1)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    residual = (w[:, None] * (y - pred) ** 2).sum(axis=0)
    total = (w[:, None] * (y - np.average(y, axis=0, weights=w)) ** 2).sum(axis=0)
    scores = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), np.where(residual > 0, 0.0, 1.0))
    return float(scores.mean())


def _float_array(name, a, dtype):
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numeric data, got dtype {arr.dtype}")
    arr = arr.astype(arr.dtype if arr.dtype in dtype else dtype[0])
    if not np.isfinite(arr).all():
        raise ValueError(f"Input {name} contains NaN or infinity.")
    return arr


def validate_data(estimator, X, y="no_validation", reset=True, dtype=(np.float64, np.float32), y_numeric=False,
                  **_):
    X = _float_array("X", X, dtype)
    if X.ndim != 2:
        raise ValueError(f"Expected 2D array, got {X.ndim}D array instead")
    if X.shape[0] == 0:
        raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required.")
    if reset:
        estimator.n_features_in_ = X.shape[1]
    elif X.shape[1] != estimator.n_features_in_:
        raise ValueError(f"X has {X.shape[1]} features, but {type(estimator).__name__} is expecting "
                         f"{estimator.n_features_in_} features as input.")
    if isinstance(y, str) and y == "no_validation":
        return X
    if y is None:
        raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the target y is None.")
    y = _float_array("y", y, (np.float64,)) if y_numeric else np.asarray(y)
    if len(y) != len(X):
        raise ValueError(f"Found input variables with inconsistent numbers of samples: {[len(X), len(y)]}")
    return X, y


def column_or_1d(y, warn=False):
    if y.ndim == 2 and y.shape[1] == 1:
        if warn:
            warnings.warn("A column-vector y was passed when a 1d array was expected.", DataConversionWarning)
        return y.ravel()
    return y


def check_classification_targets(y):
    if y.ndim != 1 and type_of_target(y) != "multilabel-indicator":
        raise ValueError("Unknown label type: multiclass-multioutput")
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        raise ValueError("Unknown label type: continuous. Maybe you are trying to fit a classifier, which "
                         "expects discrete classes on a regression target with continuous values.")


def type_of_target(y):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return "multilabel-indicator" if np.isin(y, (0, 1)).all() else "multiclass-multioutput"
    return "multiclass"


def _check_sample_weight(sample_weight, X, dtype=None, ensure_non_negative=False):
    w = np.asarray(sample_weight, dtype=dtype or np.float64)
    w = np.full(X.shape[0], w, dtype=w.dtype) if w.ndim == 0 else w
    if w.shape != (X.shape[0],):
        raise ValueError(f"sample_weight.shape == {w.shape}, expected {(X.shape[0],)}!")
    if ensure_non_negative and (w < 0).any():
        raise ValueError("Negative values in data passed to `sample_weight`")
    return w


def check_is_fitted(estimator):
    if not any(v.endswith("_") and not v.startswith("__") for v in vars(estimator)):
        raise NotFittedError(f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with "
                             f"appropriate arguments before using this estimator.")


def available_if(check):
    """Methods stay defined; the check runs on call (scikit-learn hides them from hasattr)."""
    def decorate(method):
        def wrapper(self, *args, **kwargs):
            check(self)
            return method(self, *args, **kwargs)
        wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
        return wrapper
    return decorate


def _check_optimize_result(solver, result, max_iter=None):
    if not result.success:
        warnings.warn(f"{solver} failed to converge after {result.nit} iteration(s) (status={result.status}): "
                      f"{result.message}", ConvergenceWarning)
    return min(result.nit, max_iter) if max_iter is not None else result.nit


def train_test_split(*arrays, test_size, random_state, stratify=None):
    """Shuffled split (per class when ``stratify`` is given), ``test_size`` a fraction."""
    rng = np.random.default_rng(random_state)
    n = len(arrays[0])
    groups = [np.arange(n)] if stratify is None else [np.flatnonzero(stratify == c) for c in np.unique(stratify)]
    test = np.concatenate([rng.permutation(g)[:int(round(len(g) * test_size))] for g in groups])
    train = np.setdiff1d(np.arange(n), test)
    return [part for a in arrays for part in (a[train], a[test])]
