"""scikit-learn estimators: ``MLPClassifier`` and ``MLPRegressor`` with scikit-learn's parameters,
attributes, validation and messages, trained by the fused kernels (one engine call per epoch
for 'adam' / 'sgd' on dense X, ``mlp_train_epoch``; one per minibatch on sparse X; one per
function evaluation for 'lbfgs').

    >>> clf = fd.MLPClassifier(hidden_layer_sizes=(100,), max_iter=200, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:5]); clf.score(X_test, y_test)

With scikit-learn installed the estimators derive from its BaseEstimator and mixins and validate
with its own ``validate_data`` (Pipeline, GridSearchCV, clone and ``check_estimator`` work);
without it, minimal stand-ins are used (fusedense._sklearn_fallback).

The L2 penalty ``alpha`` is scikit-learn's, on the weight matrices only: ``0.5·alpha·ΣW²/n`` (n the
batch's rows, or its sample weights' sum) in the loss and ``alpha·W/n`` in each coef gradient. For
'adam' / 'sgd' it is the layer record's kernel penalty (l2 = alpha/2 per layer, times
``hyper[H_PENALTY_SCALE]`` = 1/n each step), added inside the fused training step; 'lbfgs' adds
it to the full-batch loss and gradient in NumPy (fusedense._lbfgs).

Differences from sklearn.neural_network (see the README): Adam adds ε to the bias-corrected √v̂
unless ``epsilon_added_to="sqrt_v"``; with sparse X the stochastic solvers do not penalise the
first layer's weights (its lazy update moves only the batch's rows); the initial weights come
from ``numpy.random.default_rng(random_state)``.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from . import _lbfgs, abi
from . import optimizers as _optimizers
from .network import MLP
from .sparse import CSR, is_sparse

__all__ = ["MLPClassifier", "MLPRegressor"]

try:  # optional: the real base classes make Pipeline / GridSearchCV / clone / check_estimator work
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.optimize import _check_optimize_result
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data
except ImportError:
    from ._sklearn_fallback import (BaseEstimator, ClassifierMixin, ConvergenceWarning, RegressorMixin,
                                    _check_optimize_result, _check_sample_weight, accuracy_score,
                                    available_if, check_classification_targets, check_is_fitted,
                                    column_or_1d, r2_score, train_test_split, type_of_target, validate_data)

_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_SOLVERS = ("lbfgs", "sgd", "adam")
_LEARNING_RATES = ("constant", "invscaling", "adaptive")
_EPSILON_PLACES = ("sqrt_v_hat", "sqrt_v")
_FLOATS = (np.float64, np.float32)
#: SciPy formats fit/predict take as they are (others become CSR); the network reads them as CSR
_SPARSE = ("csr", "csc", "coo")
_NON_FINITE = ("Solver produced non-finite parameter weights. The input data may contain large values "
               "and need to be preprocessed.")


def _is_stochastic(estimator):
    if estimator.solver == "lbfgs":
        raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                             f"{estimator.solver} is not stochastic.")
    return True


class _BaseMLP(BaseEstimator):
    """scikit-learn's MLP training semantics (``_fit_stochastic``, ``_fit_lbfgs``) over a fusedense MLP."""

    _classifier = True  # class labels as targets (stratified early-stopping split)
    _loss_scale = 1.0  # factor from the fused loss to scikit-learn's reported loss
    _grad_scale = 1.0  # fused loss gradient / scikit-learn's gradient

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 epsilon_added_to="sqrt_v_hat", backend=None):
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
        self.max_fun = max_fun
        self.epsilon_added_to = epsilon_added_to
        self.backend = backend

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # CSR/CSC/COO train through the fused sparse first layer (lbfgs: densified, see _fit)
        tags.input_tags.sparse = True
        return tags

    def __sklearn_is_fitted__(self):
        return hasattr(self, "network_")

    # --- parameter checks ----------------------------------------------------------------------

    def _check_params(self):
        for name, allowed in (("activation", _ACTIVATIONS), ("solver", _SOLVERS),
                              ("learning_rate", _LEARNING_RATES), ("epsilon_added_to", _EPSILON_PLACES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"The '{name}' parameter of {type(self).__name__} must be a str among "
                                 f"{list(allowed)}. Got {getattr(self, name)!r} instead.")
        hidden = [self.hidden_layer_sizes] if np.isscalar(self.hidden_layer_sizes) else list(self.hidden_layer_sizes)
        if any(int(h) != h or h < 1 for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")
        for name in ("max_iter", "n_iter_no_change", "max_fun"):
            if getattr(self, name) < 1:
                raise ValueError(f"The '{name}' parameter of {type(self).__name__} must be an int in the "
                                 f"range [1, inf). Got {getattr(self, name)!r} instead.")
        if self.alpha < 0 or self.learning_rate_init <= 0:
            raise ValueError(f"alpha >= 0 and learning_rate_init > 0 expected, got alpha={self.alpha!r}, "
                             f"learning_rate_init={self.learning_rate_init!r}")
        if self.early_stopping and not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        return [int(h) for h in hidden]

    # --- fitting ---------------------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Trains from scratch (or from the current weights with warm_start=True)."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental):
        hidden = self._check_params()
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        first = not hasattr(self, "network_") or not (self.warm_start or incremental)
        X, y = validate_data(self, X, y, reset=first, multi_output=True, dtype=_FLOATS,
                             y_numeric=not self._classifier, accept_sparse=_SPARSE)
        if self.solver == "lbfgs" and is_sparse(X):
            # scikit-learn's lbfgs takes sparse X; full-batch L-BFGS runs the dense mlp_gradient, so
            # the matrix is densified once (the stochastic solvers use the fused sparse first layer)
            X = X.toarray()
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        targets = self._encode_targets(y, incremental, first)
        if first:
            self._initialize(X, hidden)
        net = self.network_
        X = net.as_inputs(X, "X")
        targets = np.ascontiguousarray(targets, dtype=np.int64 if targets.dtype.kind == "i" else net.dtype)
        self._set_penalties(sparse_first_layer=isinstance(X, CSR))
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, targets, sample_weight)
        else:
            self._fit_stochastic(X, targets, y, sample_weight, incremental)
        if not np.isfinite(net.params).all():
            raise ValueError(_NON_FINITE)
        return self

    def _initialize(self, X, hidden):
        """A fresh network with scikit-learn's initialisation (uniform ±sqrt(6/(fan_in+fan_out)),
        factor 2 instead of 6 for logistic; biases drawn like the weights)."""
        # random_state=None draws from NumPy's global generator, as scikit-learn's check_random_state
        self._rng = np.random.default_rng(
            self.random_state.randint(2**31) if isinstance(self.random_state, np.random.RandomState)
            else np.random.randint(2**31) if self.random_state is None else self.random_state)
        sizes = [X.shape[1], *hidden, self.n_outputs_]
        self.network_ = MLP(sizes, _ACTIVATIONS[self.activation], self._output_activation, dtype=X.dtype,
                            backend=self.backend)
        factor = 2.0 if self.activation == "logistic" else 6.0
        for W, b in self.network_.weights:
            bound = math.sqrt(factor / (W.shape[0] + W.shape[1]))
            W[...] = self._rng.uniform(-bound, bound, W.shape)
            b[...] = self._rng.uniform(-bound, bound, b.shape)
        self.n_iter_ = self.t_ = 0
        if self.solver != "lbfgs":
            self.loss_curve_ = []
            self._no_improvement_count = 0
            self.best_loss_ = None if self.early_stopping else np.inf
            self.validation_scores_ = [] if self.early_stopping else None
            self.best_validation_score_ = -np.inf if self.early_stopping else None
        if hasattr(self, "_optimizer"):
            del self._optimizer

    def _set_penalties(self, sparse_first_layer):
        """The network's kernel penalties for ``alpha`` (set_params may change it between fits):
        scikit-learn's alpha·W/n on each coef gradient is the fused loss's gradient scale times
        2·l2·W·scale with l2 = alpha/2 and the step's H_PENALTY_SCALE = 1/n (set per batch). The
        sparse first layer takes none (the gate refuses it: its update is lazy)."""
        net = self.network_
        l2 = 0.5 * self.alpha * self._grad_scale if self.solver != "lbfgs" else 0.0  # lbfgs: _lbfgs adds it
        penalties = np.zeros((len(net.sizes) - 1, 2))
        penalties[:, 1] = l2
        if sparse_first_layer:
            penalties[0] = 0.0
        if not np.array_equal(penalties, net.penalties):
            net.penalties = penalties

    @staticmethod
    def _engine_weights(sample_weight, dtype):
        """(weights for the engine, their sum): scikit-learn's weighted average is the engine's mean
        over the rows of weights rescaled to sum to the row count."""
        total = float(sample_weight.sum())
        scale = len(sample_weight) / total if total > 0 else 0.0
        return np.ascontiguousarray(sample_weight * scale, dtype=dtype), total

    def _fit_lbfgs(self, X, targets, sample_weight):
        weights, weight_sum = (None, X.shape[0]) if sample_weight is None else \
            self._engine_weights(sample_weight, X.dtype)
        result = _lbfgs.minimize(self.network_, X, targets, self._loss_id, weights, weight_sum=weight_sum,
                                 alpha=self.alpha, loss_scale=self._loss_scale, grad_scale=self._grad_scale,
                                 max_iter=self.max_iter, max_fun=self.max_fun, tol=self.tol, verbose=self.verbose)
        self.n_iter_ = _check_optimize_result("lbfgs", result, self.max_iter)
        self.loss_ = float(result.fun)

    def _fit_stochastic(self, X, targets, y, sample_weight, incremental):
        net = self.network_
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = self._make_optimizer()
            net.set_optimizer(self._optimizer)
        validation = None
        if self.early_stopping:
            X, targets, sample_weight, validation = self._split_validation(X, targets, y, sample_weight)
        n = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if not 1 <= self.batch_size <= n:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n))
        self.n_iter_ = 0  # epochs of this call, as in scikit-learn 1.9 (t_ and loss_curve_ keep counting)
        for _ in range(1 if incremental else self.max_iter):
            order = self._rng.permutation(n) if self.shuffle else None
            try:
                self.loss_ = self._epoch(X, targets, sample_weight, batch_size, order)
            except FloatingPointError as exc:
                raise ValueError(f"{_NON_FINITE} ({exc})") from None
            self.n_iter_ += 1
            self.t_ += n
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
            self._update_no_improvement_count(validation)
            if self.solver == "sgd" and self.learning_rate == "invscaling":
                self._set_learning_rate(self.learning_rate_init / (self.t_ + 1) ** self.power_t)
            if self._no_improvement_count > self.n_iter_no_change:
                if self._stop_or_slow_down():
                    break
                self._no_improvement_count = 0
            if not incremental and self.n_iter_ == self.max_iter:
                warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                              f"optimization hasn't converged yet.", ConvergenceWarning)
        if self.early_stopping:
            net.params[...] = self._best_params

    def _epoch(self, X, targets, sample_weight, batch_size, order):
        """One pass in minibatches, one fused step each; returns scikit-learn's epoch loss: the
        batches' losses before their updates, each with its L2 penalty 0.5·alpha·ΣW²/Σw (the
        fused step adds it, from the weights before the update), averaged over rows."""
        net = self.network_
        # the fused loss is (scikit-learn's data loss)/loss_scale + grad_scale·(its penalty): one
        # factor converts it back unless loss_scale·grad_scale != 1 (a regressor with several
        # outputs), where the penalty is taken out and added back unscaled
        separate_penalty = bool(self.alpha) and not math.isclose(self._loss_scale * self._grad_scale, 1.0)
        if separate_penalty:  # (not self.coefs_: its check_is_fitted reads the estimator's tags, ~0.1 ms)
            penalised = [W for W, _ in net.weights[1 if isinstance(X, CSR) else 0:]]  # (see _set_penalties)
        if not separate_penalty and not isinstance(X, CSR):
            # the common case: the whole epoch in one engine call (no Python between the steps)
            return self._loss_scale * self._fused_epoch(X, targets, sample_weight, batch_size, order)
        n = X.shape[0]
        if order is not None:  # gather buffers reused from batch to batch (still in cache for the kernel)
            # (a sparse X gathers its rows itself: CSR.take)
            x_rows = np.empty((batch_size, 0 if isinstance(X, CSR) else X.shape[1]), X.dtype)
            target_rows = np.empty((batch_size, *targets.shape[1:]), targets.dtype)
        total = 0.0
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            rows = slice(start, stop) if order is None else order[start:stop]
            if order is None:
                xb, tb = X[rows], targets[rows]
            else:
                xb = X.take(rows, 0, x_rows[:stop - start], "clip")
                tb = targets.take(rows, 0, target_rows[:stop - start], "clip")
            weights, weight_sum = (None, stop - start) if sample_weight is None else \
                self._engine_weights(sample_weight[rows], X.dtype)
            self._set_step_hyperparameters(weight_sum)
            penalty = 0.0
            if separate_penalty and weight_sum > 0:
                penalty = 0.5 * self.alpha * sum(float(np.vdot(W, W)) for W in penalised) / weight_sum
            step_loss = net.fused_step(xb, tb, self._loss_id, sample_weight=weights)
            batch_loss = self._loss_scale * (step_loss - self._grad_scale * penalty) + penalty
            total += batch_loss * (stop - start)
        return total / n

    def _fused_epoch(self, X, targets, sample_weight, batch_size, order):
        """The epoch as net.fused_epoch: the engine applies scikit-learn's per-batch penalty scale
        1/Σw and (``epsilon_added_to="sqrt_v"``) Adam's per-step ε itself, from the base values set here."""
        net = self.network_
        sqrt_v = self.solver == "adam" and self.epsilon_added_to == "sqrt_v"
        if sqrt_v and self._optimizer.epsilon != self.epsilon * self._grad_scale:  # (the per-batch loop changes it)
            self._optimizer.epsilon = self.epsilon * self._grad_scale
            net.refresh_hyperparameters()
        net.penalty_scale = 1.0
        weights = None if sample_weight is None else np.ascontiguousarray(sample_weight, dtype=X.dtype)
        return net.fused_epoch(X, targets, self._loss_id, batch_size, order, weights,
                               penalty_over_weight=True, epsilon_on_sqrt_v=sqrt_v)

    def _make_optimizer(self):
        """scikit-learn's update rules expressed through the fused optimizer: the fused loss's
        gradient scale is undone (in the SGD rate and Adam's ε; the kernel penalty carries it
        itself, see _set_penalties)."""
        if self.solver == "sgd":
            return _optimizers.SGD(self.learning_rate_init / self._grad_scale, self.momentum,
                                   self.nesterovs_momentum and self.momentum > 0)
        return _optimizers.Adam(self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon * self._grad_scale)

    def _set_step_hyperparameters(self, weight_sum):
        """The per-step values the train step reads from the hyper vector: the penalty scale 1/Σw
        of this batch (scikit-learn divides alpha·W by it), and for ``epsilon_added_to="sqrt_v"``
        the ε that puts scikit-learn's step (ε added to √v) into the engine's (ε' added to
        √v̂ = √v/√(1−β2^t)): ε' = ε/√(1−β2^t)."""
        net = self.network_
        if self.solver == "adam" and self.epsilon_added_to == "sqrt_v":
            self._optimizer.epsilon = self.epsilon * self._grad_scale / math.sqrt(1 - self.beta_2 ** (net.step + 1))
            net.refresh_hyperparameters()
        net.penalty_scale = 1.0 / weight_sum if weight_sum > 0 else 0.0

    def _set_learning_rate(self, sklearn_lr):
        self._optimizer.learning_rate = sklearn_lr / (self._grad_scale if self.solver == "sgd" else 1.0)
        self.network_.refresh_hyperparameters()

    def _stop_or_slow_down(self):
        """scikit-learn's trigger_stopping: 'adaptive' SGD divides the learning rate by 5 instead of
        stopping, until the rate is already at most 1e-6."""
        what = "Validation score" if self.early_stopping else "Training loss"
        current = self._optimizer.learning_rate * (self._grad_scale if self.solver == "sgd" else 1.0)
        if self.solver == "sgd" and self.learning_rate == "adaptive" and current > 1e-6:
            self._set_learning_rate(current / 5)
            return False
        if self.verbose:
            print(f"{what} did not improve more than tol={self.tol} for {self.n_iter_no_change} consecutive epochs. Stopping.")
        return True

    def _split_validation(self, X, targets, y, sample_weight):
        """scikit-learn's hold-out split (stratified for classifiers); returns the training part and
        (X_val, y_val, sample_weight_val)."""
        stratify = y if self._classifier and not getattr(self, "_multilabel", False) else None
        arrays = (X, targets, y) + (() if sample_weight is None else (sample_weight,))
        parts = train_test_split(*arrays, test_size=self.validation_fraction, stratify=stratify,
                                 random_state=int(self._rng.integers(2**31)))
        X, X_val, targets, _, _, y_val = parts[:6]
        sw, sw_val = parts[6:] if sample_weight is not None else (None, None)
        if X_val.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of "
                             "your dataset.")
        self._best_params = self.network_.params.copy()
        return np.ascontiguousarray(X), np.ascontiguousarray(targets), sw, (X_val, y_val, sw_val)

    def _update_no_improvement_count(self, validation):
        if validation is not None:
            score = self._validation_score(*validation)
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            self._no_improvement_count = self._no_improvement_count + 1 if score < self.best_validation_score_ + self.tol else 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params[...] = self.network_.params
        else:
            last = self.loss_curve_[-1]
            self._no_improvement_count = self._no_improvement_count + 1 if last > self.best_loss_ - self.tol else 0
            self.best_loss_ = min(self.best_loss_, last)

    # --- fitted attributes ---------------------------------------------------------------------------

    def _network(self):
        check_is_fitted(self)
        return self.network_

    def _write_layers(self, arrays, which, name):
        views = [pair[which] for pair in self._network().weights]
        if len(arrays) != len(views):
            raise ValueError(f"{name}: expected {len(views)} arrays (one per layer), got {len(arrays)}")
        for i, (view, value) in enumerate(zip(views, arrays)):
            value = np.asarray(value)
            if value.shape != view.shape:
                raise ValueError(f"{name}[{i}]: expected shape {view.shape}, got shape {value.shape}")
            view[...] = value

    @property
    def coefs_(self):
        """Weight matrices per layer (fan_in × fan_out): views into the flat parameter buffer;
        assigning a list of arrays of the same shapes writes them into it."""
        return [W for W, _ in self._network().weights]

    @coefs_.setter
    def coefs_(self, arrays):
        self._write_layers(arrays, 0, "coefs_")

    @property
    def intercepts_(self):
        """Bias vectors per layer: views into the flat parameter buffer (assignable as coefs_)."""
        return [b for _, b in self._network().weights]

    @intercepts_.setter
    def intercepts_(self, arrays):
        self._write_layers(arrays, 1, "intercepts_")

    @property
    def n_layers_(self):
        return len(self._network().sizes)

    @property
    def out_activation_(self):
        return {"sigmoid": "logistic"}.get(self._output_activation, self._output_activation)

    def _forward(self, X):
        net = self._network()
        return net.predict(validate_data(self, X, reset=False, dtype=_FLOATS, accept_sparse=_SPARSE))


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier (sklearn.neural_network.MLPClassifier's interface):
    softmax output and log-loss for several classes, one logistic output for two, a logistic
    output per label for a multilabel indicator matrix y (classes_ = 0..n_labels-1)."""

    _multilabel = False

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    @property
    def _loss_scale(self):
        # the fused binary cross-entropy is the mean over rows and labels; scikit-learn's sums the labels
        return float(self.n_outputs_) if self._multilabel else 1.0

    @property
    def _grad_scale(self):
        return 1.0 / self._loss_scale

    def _encode_targets(self, y, incremental, first):
        check_classification_targets(y)
        multilabel = type_of_target(y) == "multilabel-indicator"
        if y.ndim == 2 and not multilabel:  # scikit-learn's LabelBinarizer refuses it with these words
            raise ValueError("Multioutput target data is not supported with label binarization")
        if not hasattr(self, "classes_") or not (self.warm_start or incremental):
            self._set_classes(np.arange(y.shape[1]) if multilabel else np.unique(y), multilabel)
        elif multilabel != self._multilabel or (multilabel and y.shape[1] != self.n_outputs_):
            first_kind = (f"a multilabel indicator matrix of {self.n_outputs_} columns" if self._multilabel
                          else "class labels")
            raise ValueError(f"y: expected the kind of target of the first fit ({first_kind}), "
                             f"got {type_of_target(y)} of shape {y.shape}")
        elif not multilabel:
            classes = np.unique(y)
            if self.warm_start and not incremental and set(classes) != set(self.classes_):
                raise ValueError(f"warm_start can only be used where `y` has the same classes as in the "
                                 f"previous call to fit. Previously got {self.classes_}, `y` has {classes}")
            if len(np.setdiff1d(classes, self.classes_)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {classes}.")
        if multilabel:
            return y.astype(np.float64)
        index = np.searchsorted(self.classes_, y)
        return index.reshape(-1, 1).astype(np.float64) if self.n_outputs_ == 1 else index.astype(np.int64)

    def _set_classes(self, classes, multilabel=False):
        if len(classes) < 2 and not multilabel:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in the data, "
                             f"but the data contains only 1 class: {classes[0]!r}")
        self.classes_ = classes
        self._multilabel = multilabel
        logistic = multilabel or len(classes) == 2  # one sigmoid output per label, or one for two classes
        self.n_outputs_ = len(classes) if multilabel else 1 if logistic else len(classes)
        self._output_activation = "sigmoid" if logistic else "softmax"
        self._loss_id = abi.LOSS_BINARY_XENT if logistic else abi.LOSS_SPARSE_XENT

    def _validation_score(self, X_val, y_val, sample_weight):
        """Accuracy on the held-out rows (checked once by fit, so straight to the network)."""
        return float(accuracy_score(y_val, self._labels(self.network_.predict(X_val)), sample_weight=sample_weight))

    @available_if(_is_stochastic)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y); the first call needs ``classes`` (all labels that will occur)."""
        if not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            if type_of_target(y) == "multilabel-indicator":  # the labels are y's columns (as scikit-learn)
                self._set_classes(np.arange(np.shape(y)[1]), multilabel=True)
            else:
                self._set_classes(np.unique(np.asarray(classes)))
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"`classes={list(classes)}` is not the same as on last call to partial_fit, "
                             f"was: {self.classes_}")
        return self._fit(X, y, sample_weight, incremental=True)

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
        if self._multilabel:
            return (p > 0.5).astype(np.int64)  # the indicator matrix (classes_ numbers the columns)
        index = (p[:, 0] > 0.5).astype(np.int64) if self.n_outputs_ == 1 else p.argmax(axis=1)
        return self.classes_[index]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor (sklearn.neural_network.MLPRegressor's interface):
    identity output, squared-error loss (scikit-learn reports half the mean squared error)."""

    _classifier = False
    _output_activation = "identity"
    _loss_id = abi.LOSS_MSE
    _loss_scale = 0.5

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 epsilon_added_to="sqrt_v_hat", backend=None):
        self.loss = loss
        super().__init__(hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
                         learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t,
                         max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
                         warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
                         early_stopping=early_stopping, validation_fraction=validation_fraction, beta_1=beta_1,
                         beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
                         epsilon_added_to=epsilon_added_to, backend=backend)

    def _check_params(self):
        if not isinstance(self.loss, str):
            raise ValueError(f"The 'loss' parameter of MLPRegressor must be a str: it is the first positional "
                             f"parameter, as in scikit-learn (hidden sizes go in hidden_layer_sizes=). "
                             f"Got {self.loss!r} instead.")
        if self.loss != "squared_error":  # scikit-learn's other choice, 'poisson', has no fused kernel yet
            raise ValueError(f"The 'loss' parameter of MLPRegressor must be 'squared_error' in fusedense "
                             f"(scikit-learn's 'poisson' is not implemented). Got {self.loss!r} instead.")
        return super()._check_params()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _encode_targets(self, y, incremental, first):
        y2 = np.asarray(y, dtype=np.float64).reshape(y.shape[0], -1)
        if first:
            self.n_outputs_ = y2.shape[1]
        elif y2.shape[1] != self.n_outputs_:
            raise ValueError(f"y: expected {self.n_outputs_} target column(s) as in the first fit, got {y2.shape[1]}")
        return y2

    @property
    def _grad_scale(self):
        return 2.0 / self.n_outputs_  # d mean((y-t)²)/dy = 2(y-t)/(B·K); scikit-learn's gradient is (y-t)/B

    def _validation_score(self, X_val, y_val, sample_weight):
        """R² on the held-out rows (checked once by fit, so straight to the network)."""
        return float(r2_score(y_val, self._shaped(self.network_.predict(X_val)), sample_weight=sample_weight))

    @available_if(_is_stochastic)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        return self._shaped(self._forward(X))

    def _shaped(self, out):
        return out.ravel() if self.n_outputs_ == 1 else out
