"""scikit-learn-style estimators: ``MLPClassifier`` and ``MLPRegressor`` with sklearn's parameter
names and meanings, trained by the fused kernels (one backend call per minibatch).

    >>> clf = fd.MLPClassifier(hidden_layer_sizes=(100,), max_iter=200, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:5]); clf.score(X_test, y_test)

When scikit-learn is installed the estimators derive from its BaseEstimator and mixins (so
Pipeline, cross_val_score, GridSearchCV and clone work); without it a minimal equivalent of
get_params/set_params/score is used. scikit-learn is imported only when this module is.

Differences from sklearn.neural_network: solvers 'adam' and 'sgd' only (no 'lbfgs'); the L2
penalty ``alpha`` also decays the biases (the fused optimizer treats the flat buffer alike);
multilabel classification is not supported; the network keeps float32 input as float32 and
computes in float64 otherwise (as sklearn does).
"""
from __future__ import annotations

import inspect
import math
import warnings

import numpy as np

from . import abi
from . import optimizers as _optimizers
from .network import MLP

__all__ = ["MLPClassifier", "MLPRegressor"]

try:  # optional: the real base classes make Pipeline / GridSearchCV / clone work
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning, NotFittedError
except ImportError:
    class BaseEstimator:
        """get_params / set_params from the __init__ signature, as sklearn's BaseEstimator."""

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
            return float(np.average(self.predict(X) == np.asarray(y), weights=sample_weight))

    class RegressorMixin:
        _estimator_type = "regressor"

        def score(self, X, y, sample_weight=None):
            return _r2_score(np.asarray(y), self.predict(X), sample_weight)

    class ConvergenceWarning(UserWarning):
        pass

    class NotFittedError(ValueError, AttributeError):
        pass


def _r2_score(y, pred, sample_weight=None):
    """R² averaged uniformly over outputs (sklearn's r2_score default)."""
    y, pred = y.reshape(len(y), -1), pred.reshape(len(pred), -1)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    residual = (w[:, None] * (y - pred) ** 2).sum(axis=0)
    total = (w[:, None] * (y - np.average(y, axis=0, weights=w)) ** 2).sum(axis=0)
    scores = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), np.where(residual > 0, 0.0, 1.0))
    return float(scores.mean())


_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_LEARNING_RATES = ("constant", "invscaling", "adaptive")


class _BaseMLP(BaseEstimator):
    """The shared training loop (sklearn's ``_fit_stochastic`` semantics) over a fusedense MLP."""

    _output_activation = None  # set by fit: what the last layer computes
    _loss_scale = 1.0  # factor from the fused loss to sklearn's reported loss
    _grad_scale = 1.0  # fused loss gradient / sklearn's gradient

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, backend=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend

    # --- parameter checks ----------------------------------------------------------------------

    def _check_params(self):
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation: expected one of {', '.join(_ACTIVATIONS)}, got {self.activation!r}")
        if self.solver not in ("adam", "sgd"):
            raise ValueError(f"solver: fusedense supports 'adam' and 'sgd', got {self.solver!r}")
        if self.learning_rate not in _LEARNING_RATES:
            raise ValueError(f"learning_rate: expected one of {', '.join(_LEARNING_RATES)}, got {self.learning_rate!r}")
        hidden = [self.hidden_layer_sizes] if np.isscalar(self.hidden_layer_sizes) else list(self.hidden_layer_sizes)
        if any(int(h) != h or h < 1 for h in hidden):
            raise ValueError(f"hidden_layer_sizes: expected positive integers, got {self.hidden_layer_sizes!r}")
        for name in ("max_iter", "n_iter_no_change"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {getattr(self, name)!r}")
        if self.alpha < 0 or self.learning_rate_init <= 0:
            raise ValueError(f"alpha >= 0 and learning_rate_init > 0 expected, got alpha={self.alpha!r}, "
                             f"learning_rate_init={self.learning_rate_init!r}")
        if self.early_stopping and not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction: expected a fraction in (0, 1), got {self.validation_fraction!r}")
        return [int(h) for h in hidden]

    def _validate_X(self, X, reset):
        X = np.asarray(X)
        if X.dtype.kind not in "biuf":
            raise TypeError(f"X: expected numeric data, got dtype {X.dtype}")
        if X.ndim != 2:
            raise ValueError(f"X: expected a 2-D array (n_samples, n_features), got shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError(f"X: expected at least one sample, got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X: contains NaN or infinity")
        if not reset and X.shape[1] != self.n_features_in_:
            raise ValueError(f"X: has {X.shape[1]} features, but {type(self).__name__} was fitted with "
                             f"{self.n_features_in_} features")
        return X

    # --- fitting ---------------------------------------------------------------------------------

    def fit(self, X, y):
        """Trains from scratch (or from the current weights with warm_start=True)."""
        return self._fit(X, y, incremental=False)

    def _fit(self, X, y, incremental):
        hidden = self._check_params()
        first = not (hasattr(self, "network_") and (incremental or self.warm_start))
        X = self._validate_X(X, reset=first)
        targets = self._encode_targets(y, X.shape[0], fitting=first)
        if first:
            self._initialize(X, hidden)
        net = self.network_
        X = net.as_inputs(X, "X")
        targets = np.ascontiguousarray(targets, dtype=np.int64 if targets.dtype.kind == "i" else net.dtype)
        if self.early_stopping and not incremental:
            X, X_val, targets, y_val = self._split_validation(X, targets, y)
        else:
            X_val = y_val = None
        n = X.shape[0]
        batch_size = min(200, n) if self.batch_size == "auto" else int(np.clip(self.batch_size, 1, n))
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = self._make_optimizer(batch_size)
            net.set_optimizer(self._optimizer)
        coefs = self.coefs_  # views, made once (the L2 penalty reads them every epoch)
        self.n_iter_ = 0  # epochs of this call, as in scikit-learn 1.9 (t_ and loss_curve_ keep counting)
        for _ in range(1 if incremental else self.max_iter):
            order = self._rng.permutation(n) if self.shuffle else None
            loss = net.train_epoch(X, targets, self._loss_id, batch_size, order)
            self.n_iter_ += 1
            self.t_ += n
            penalty = 0.5 * self.alpha * sum(float(np.vdot(W, W)) for W in coefs) / batch_size
            self.loss_ = loss * self._loss_scale + penalty
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
            self._update_no_improvement_count(X_val, y_val)
            if self.solver == "sgd" and self.learning_rate == "invscaling":
                self._set_learning_rate(self.learning_rate_init / (self.t_ + 1) ** self.power_t)
            if self._no_improvement_count > self.n_iter_no_change:
                if self._stop_or_slow_down():
                    break
                self._no_improvement_count = 0
            if incremental:
                break
            if self.n_iter_ == self.max_iter:
                warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                              f"optimization hasn't converged yet.", ConvergenceWarning)
        if self.early_stopping and not incremental:
            net.params[...] = self._best_params
        return self

    def _initialize(self, X, hidden):
        """A fresh network with sklearn's initialisation (uniform ±sqrt(6/(fan_in+fan_out)), factor
        2 instead of 6 for logistic; biases drawn like the weights)."""
        self._rng = np.random.default_rng(
            self.random_state.randint(2**31) if isinstance(self.random_state, np.random.RandomState)
            else self.random_state)
        self.n_features_in_ = X.shape[1]
        dtype = np.float32 if X.dtype == np.float32 else np.float64
        sizes = [X.shape[1], *hidden, self.n_outputs_]
        self.network_ = MLP(sizes, _ACTIVATIONS[self.activation], self._output_activation, dtype=dtype,
                            backend=self.backend)
        factor = 2.0 if self.activation == "logistic" else 6.0
        for W, b in self.network_.weights:
            bound = math.sqrt(factor / (W.shape[0] + W.shape[1]))
            W[...] = self._rng.uniform(-bound, bound, W.shape)
            b[...] = self._rng.uniform(-bound, bound, b.shape)
        self.t_ = 0
        self.loss_curve_ = []
        self._no_improvement_count = 0
        self.best_loss_ = np.inf
        if self.early_stopping:
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
        else:
            self.validation_scores_ = self.best_validation_score_ = None
        if hasattr(self, "_optimizer"):
            del self._optimizer

    def _make_optimizer(self, batch_size):
        """sklearn's update rules expressed through the fused optimizer: the L2 term alpha·W/batch
        becomes weight decay, and the fused loss's gradient scale is undone."""
        weight_decay = self._grad_scale * self.alpha / batch_size
        if self.solver == "sgd":
            return _optimizers.SGD(self.learning_rate_init / self._grad_scale, self.momentum,
                                   self.nesterovs_momentum and self.momentum > 0, weight_decay)
        return _optimizers.Adam(self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon, weight_decay)

    def _set_learning_rate(self, sklearn_lr):
        self._optimizer.learning_rate = sklearn_lr / (self._grad_scale if self.solver == "sgd" else 1.0)
        self.network_.refresh_hyperparameters()

    def _stop_or_slow_down(self):
        """sklearn's trigger_stopping: 'adaptive' SGD divides the learning rate by 5 instead of
        stopping, until the rate is already at most 1e-6."""
        what = "Validation score" if self.early_stopping else "Training loss"
        current = self._optimizer.learning_rate * (self._grad_scale if self.solver == "sgd" else 1.0)
        if self.solver == "sgd" and self.learning_rate == "adaptive" and current > 1e-6:
            self._set_learning_rate(current / 5)
            return False
        if self.verbose:
            print(f"{what} did not improve more than tol={self.tol} for {self.n_iter_no_change} consecutive epochs. Stopping.")
        return True

    def _split_validation(self, X, targets, y):
        n_val = max(1, int(round(X.shape[0] * self.validation_fraction)))
        order = self._rng.permutation(X.shape[0])
        val, train = order[:n_val], order[n_val:]
        self._best_params = self.network_.params.copy()
        return X[train], X[val], targets[train], self._score_targets(y)[val]

    def _update_no_improvement_count(self, X_val, y_val):
        if X_val is not None:
            score = self._validation_score(X_val, y_val)
            self.validation_scores_.append(score)
            self._no_improvement_count = self._no_improvement_count + 1 if score < self.best_validation_score_ + self.tol else 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params[...] = self.network_.params
        else:
            last = self.loss_curve_[-1]
            self._no_improvement_count = self._no_improvement_count + 1 if last > self.best_loss_ - self.tol else 0
            self.best_loss_ = min(self.best_loss_, last)

    # --- fitted attributes ---------------------------------------------------------------------------

    def _check_fitted(self):
        if not hasattr(self, "network_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first.")
        return self.network_

    @property
    def coefs_(self):
        """Weight matrices per layer (fan_in × fan_out): views into the flat parameter buffer."""
        return [W for W, _ in self._check_fitted().weights]

    @property
    def intercepts_(self):
        """Bias vectors per layer: views into the flat parameter buffer."""
        return [b for _, b in self._check_fitted().weights]

    @property
    def n_layers_(self):
        return len(self._check_fitted().sizes)

    @property
    def out_activation_(self):
        return {"sigmoid": "logistic"}.get(self._output_activation, self._output_activation)

    def _forward(self, X):
        net = self._check_fitted()
        return net.predict(self._validate_X(X, reset=False))


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier (sklearn.neural_network.MLPClassifier's interface):
    softmax output and log-loss for several classes, one logistic output for two."""

    def _encode_targets(self, y, n_rows, fitting):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError(f"y: expected a 1-D array of class labels (multilabel is not supported), got shape {y.shape}")
        if y.shape[0] != n_rows:
            raise ValueError(f"y: expected {n_rows} labels (one per row of X), got {y.shape[0]}")
        if fitting:
            self._set_classes(np.unique(y))
        return self._label_indices(y)

    def _set_classes(self, classes):
        if len(classes) < 2:
            raise ValueError(f"y: needs samples of at least 2 classes, got only {list(classes)}")
        self.classes_ = classes
        binary = len(classes) == 2
        self.n_outputs_ = 1 if binary else len(classes)
        self._output_activation = "sigmoid" if binary else "softmax"
        self._loss_id = abi.LOSS_BINARY_XENT if binary else abi.LOSS_SPARSE_XENT

    def _label_indices(self, y):
        """Class positions in ``classes_``: int64 labels (softmax), or a float 0/1 column (logistic)."""
        index = np.searchsorted(self.classes_, y)
        index = np.clip(index, 0, len(self.classes_) - 1)
        unknown = self.classes_[index] != y
        if unknown.any():
            raise ValueError(f"y: contains labels not in classes_ {list(self.classes_)}: {list(np.unique(y[unknown]))[:5]}")
        return index.reshape(-1, 1).astype(np.float64) if self.n_outputs_ == 1 else index.astype(np.int64)

    def _score_targets(self, y):
        y = np.asarray(y)
        return y.ravel() if y.ndim == 2 else y

    def _validation_score(self, X_val, y_val):
        """Accuracy on the held-out rows (checked once by fit, so straight to the network)."""
        return float((self._labels(self.network_.predict(X_val)) == y_val).mean())

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y); the first call needs ``classes`` (all labels that will occur)."""
        if not hasattr(self, "network_"):
            if classes is None:
                raise ValueError("classes: the first call to partial_fit needs classes=, the list of all labels")
            self._set_classes(np.unique(np.asarray(classes)))
            X = self._validate_X(X, reset=True)
            self._initialize(X, self._check_params())
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes: {list(classes)} differs from the classes_ of the first call {list(self.classes_)}")
        return self._fit(X, y, incremental=True)

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``."""
        p = self._forward(X)
        return np.hstack([1 - p, p]) if self.n_outputs_ == 1 else p

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        return self._labels(self._forward(X))

    def _labels(self, p):
        """The class labels the network's outputs ``p`` predict."""
        index = (p[:, 0] > 0.5).astype(np.int64) if self.n_outputs_ == 1 else p.argmax(axis=1)
        return self.classes_[index]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor (sklearn.neural_network.MLPRegressor's interface):
    identity output, squared-error loss (sklearn reports half the mean squared error)."""

    _output_activation = "identity"
    _loss_id = abi.LOSS_MSE
    _loss_scale = 0.5

    def _encode_targets(self, y, n_rows, fitting):
        y = np.asarray(y)
        if y.dtype.kind not in "biuf":
            raise TypeError(f"y: expected numeric targets, got dtype {y.dtype}")
        if y.shape[:1] != (n_rows,) or y.ndim > 2:
            raise ValueError(f"y: expected shape ({n_rows},) or ({n_rows}, n_targets), got shape {y.shape}")
        if not np.isfinite(y).all():
            raise ValueError("y: contains NaN or infinity")
        y2 = y.reshape(n_rows, -1)
        if fitting:
            self.n_outputs_ = y2.shape[1]
            self._y_was_1d = y.ndim == 1
        elif y2.shape[1] != self.n_outputs_:
            raise ValueError(f"y: expected {self.n_outputs_} target column(s) as in the first fit, got {y2.shape[1]}")
        return y2.astype(np.float64)

    @property
    def _grad_scale(self):
        return 2.0 / self.n_outputs_  # d mean((y-t)²)/dy = 2(y-t)/(B·K); sklearn's gradient is (y-t)/B

    def _score_targets(self, y):
        return np.asarray(y, dtype=np.float64)

    def _validation_score(self, X_val, y_val):
        """R² on the held-out rows (checked once by fit, so straight to the network)."""
        return _r2_score(y_val, self.network_.predict(X_val))

    def partial_fit(self, X, y):
        """One epoch over (X, y), continuing from the current weights."""
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        out = self._forward(X)
        return out.ravel() if self._y_was_1d else out
