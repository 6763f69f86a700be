"""scikit-learn's MLP semantics beyond the estimator checks: L-BFGS, sample weights and Adam's ε
placement reproduce scikit-learn's trajectory from the same weights (every engine, float64),
plus early stopping, partial_fit, warm start, coefs_ assignment and scikit-learn's errors."""
import warnings

import numpy as np
import pytest

import fusedense as fd

sknn = pytest.importorskip("sklearn.neural_network")
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.normal(size=(150, 6))
LABELS = RNG.integers(0, 3, 150)
WEIGHTS = RNG.integers(0, 4, 150).astype(np.float64)
TARGETS = {"multiclass": ("MLPClassifier", LABELS), "binary": ("MLPClassifier", LABELS == 1),
           "regression": ("MLPRegressor", X @ np.linspace(-1, 1, 6) / 4),
           "two-outputs": ("MLPRegressor", X[:, :2] * [1.0, -0.5]),
           # (not separable: a separable label saturates an output, where scikit-learn clips p at ε)
           "multilabel": ("MLPClassifier", np.c_[LABELS == 0, LABELS == 1, RNG.integers(0, 2, 150)])}


def _quiet(estimator, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator.fit(*args, **kwargs)


def _twins(target, backend, **params):
    """(scikit-learn's estimator, ours) holding the same weights, warm-started so that the next
    fit of each continues from them."""
    name, y = TARGETS[target]
    params = dict(hidden_layer_sizes=(8, 5), warm_start=True, max_iter=1, random_state=0, **params)
    extra = {key: params.pop(key) for key in ("epsilon_added_to",) if key in params}
    theirs = _quiet(getattr(sknn, name)(**params), X, y)
    ours = _quiet(getattr(fd, name)(backend=backend, **params, **extra), X, y)
    ours.coefs_, ours.intercepts_ = theirs.coefs_, theirs.intercepts_
    return theirs, ours, y


def _assert_same_weights(ours, theirs, atol):
    for mine, their in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(mine, their, rtol=0, atol=atol)


@pytest.mark.parametrize("sample_weight", [None, WEIGHTS], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("target", list(TARGETS))
def test_lbfgs_follows_sklearns_lbfgs_from_the_same_weights(backend, target, sample_weight):
    theirs, ours, y = _twins(target, backend, solver="lbfgs", alpha=1e-3)
    _quiet(theirs.set_params(max_iter=30), X, y, sample_weight=sample_weight)
    _quiet(ours.set_params(max_iter=30), X, y, sample_weight=sample_weight)
    assert ours.n_iter_ == theirs.n_iter_ == 30
    # rounding differences (a different summation order) grow along 30 line searches
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-7)
    _assert_same_weights(ours, theirs, atol=1e-6)


def test_lbfgs_stops_at_max_iter_or_max_fun_with_a_convergence_warning():
    for limits, iterations in ((dict(max_iter=3), 3), (dict(max_fun=4), 4)):
        clf = fd.MLPClassifier((8,), solver="lbfgs", random_state=0, **limits)
        with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
            clf.fit(X, LABELS)
        assert clf.n_iter_ <= iterations and clf.loss_ > 0
    assert not hasattr(clf, "partial_fit") and not hasattr(clf, "loss_curve_")


class _CountingEngine:
    """Forwards to an engine and counts the calls of each of its functions."""

    def __init__(self, engine):
        self.engine, self.calls = engine, {}

    def __getattr__(self, name):
        function = getattr(self.engine, name)

        def counted(*args):
            self.calls[name] = self.calls.get(name, 0) + 1
            return function(*args)
        return counted


def test_lbfgs_makes_one_engine_call_per_evaluation(backend):
    clf = _quiet(fd.MLPClassifier((8,), solver="lbfgs", max_iter=1, warm_start=True, random_state=0,
                                  backend=backend), X, LABELS)
    clf.network_.engine = counting = _CountingEngine(clf.network_.engine)
    _quiet(clf.set_params(max_iter=5, max_fun=8), X, LABELS)
    assert list(counting.calls) == ["mlp_gradient"] and 5 <= counting.calls["mlp_gradient"] <= 9


def test_integer_sample_weights_are_repeated_rows_for_lbfgs():
    repeated = np.repeat(np.arange(len(X)), WEIGHTS.astype(int))
    weighted = _quiet(fd.MLPClassifier((8,), solver="lbfgs", max_iter=20, random_state=0), X, LABELS,
                      sample_weight=WEIGHTS)
    copies = _quiet(fd.MLPClassifier((8,), solver="lbfgs", max_iter=20, random_state=0), X[repeated], LABELS[repeated])
    np.testing.assert_allclose(weighted.predict_proba(X), copies.predict_proba(X), rtol=1e-7, atol=1e-9)


# SGD, and Adam with epsilon_added_to="sqrt_v", are scikit-learn's updates: 10 epochs from the same
# weights, with or without sample weights, with or without the L2 penalty alpha (on the weight
# matrices only, inside the fused step; in loss_curve_ too), agree to rounding. Adam's default
# placement (ε added to the bias-corrected √v̂, as PyTorch and Keras) differs visibly after 10 epochs.
@pytest.mark.parametrize("alpha", [0.0, 0.05])
@pytest.mark.parametrize("sample_weight", [None, WEIGHTS], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("rule", ["sgd", "adam-sqrt_v"])
def test_stochastic_solvers_follow_sklearn_for_ten_epochs(backend, rule, target, sample_weight, alpha):
    params = dict(solver="sgd") if rule == "sgd" else dict(solver="adam", epsilon_added_to="sqrt_v")
    theirs, ours, y = _twins(target, backend, alpha=alpha, batch_size=32, shuffle=False, learning_rate_init=0.01,
                             tol=0.0, **params)
    _quiet(theirs.set_params(max_iter=10), X, y, sample_weight=sample_weight)
    _quiet(ours.set_params(max_iter=10), X, y, sample_weight=sample_weight)
    np.testing.assert_allclose(ours.loss_curve_[1:], theirs.loss_curve_[1:], rtol=1e-12)
    _assert_same_weights(ours, theirs, atol=1e-12)


def test_adams_default_epsilon_placement_differs_from_sklearns():
    theirs, ours, y = _twins("regression", None, alpha=0.0, batch_size=32, shuffle=False,
                             learning_rate_init=0.01, tol=0.0)
    _quiet(theirs.set_params(max_iter=10), X, y)
    _quiet(ours.set_params(max_iter=10), X, y)
    gap = max(np.abs(a - b).max() for a, b in zip(ours.coefs_, theirs.coefs_))
    assert 1e-6 < gap < 1e-2


def test_early_stopping_keeps_sklearns_attributes_and_a_stratified_split():
    y = np.repeat([0, 1, 2], [180, 10, 10])
    Xs = RNG.normal(size=(200, 4)) + y[:, None]
    clf = _quiet(fd.MLPClassifier((8,), early_stopping=True, validation_fraction=0.2, max_iter=15,
                                  random_state=0), Xs, y)
    assert clf.best_loss_ is None and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    *_, (X_val, y_val, _) = clf._split_validation(Xs, y, y, None)
    assert np.bincount(y_val).tolist() == [36, 2, 2]
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        clf.partial_fit(Xs, y)


def test_partial_fit_needs_classes_and_accepts_sample_weight():
    clf = fd.MLPClassifier((8,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        clf.partial_fit(X, LABELS)
    clf.partial_fit(X, LABELS, sample_weight=WEIGHTS, classes=[0, 1, 2])
    clf.partial_fit(X[LABELS < 2], LABELS[LABELS < 2])
    assert clf.n_iter_ == 1 and clf.t_ == 150 + (LABELS < 2).sum() and len(clf.loss_curve_) == 2
    with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
        clf.partial_fit(X, LABELS + 1)


def test_warm_start_keeps_weights_and_needs_the_same_classes():
    clf = _quiet(fd.MLPClassifier((8,), max_iter=2, warm_start=True, random_state=0), X, LABELS)
    before = clf.coefs_[0].copy()
    _quiet(clf.set_params(max_iter=1), X, LABELS)
    assert len(clf.loss_curve_) == 3 and not np.array_equal(clf.coefs_[0], before)
    with pytest.raises(ValueError, match="warm_start can only be used where `y` has the same classes"):
        _quiet(clf, X[LABELS < 2], LABELS[LABELS < 2])


def test_coefs_and_intercepts_assignment_writes_the_flat_buffer_checked():
    reg = _quiet(fd.MLPRegressor(hidden_layer_sizes=(4,), max_iter=1, random_state=0), X, X[:, 0])
    reg.coefs_ = [np.zeros((6, 4)), np.zeros((4, 1))]
    reg.intercepts_ = [np.zeros(4), np.array([2.5])]
    assert (reg.network_.params[:-1] == 0).all() and (reg.predict(X) == 2.5).all()
    with pytest.raises(ValueError, match=r"coefs_\[1\]: expected shape \(4, 1\), got shape \(4, 2\)"):
        reg.coefs_ = [np.zeros((6, 4)), np.zeros((4, 2))]
    with pytest.raises(ValueError, match="expected 2 arrays"):
        reg.intercepts_ = [np.zeros(4)]


def test_divergence_raises_sklearns_value_error():
    reg = fd.MLPRegressor(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=1e6, momentum=0.0, max_iter=50, random_state=0)
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        _quiet(reg, X, X[:, 0] * 1e6)


def test_sklearns_input_errors_and_warnings():
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        fd.MLPClassifier().fit(X, X[:, 0])
    with pytest.raises(ValueError, match="requires y to be passed"):
        fd.MLPRegressor().fit(X, None)
    for ours in (fd.MLPClassifier(), sknn.MLPClassifier()):  # several label columns that are not 0/1
        with pytest.raises(ValueError, match="Multioutput target data is not supported with label binarization"):
            ours.fit(X, np.c_[LABELS, LABELS])
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        fd.MLPClassifier().fit(X, LABELS, sample_weight=-WEIGHTS)
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        _quiet_but_conversion = fd.MLPRegressor(hidden_layer_sizes=(4,), max_iter=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            _quiet_but_conversion.fit(X, X[:, :1])
    assert _quiet_but_conversion.predict(X).shape == (150,)


def test_multilabel_targets_follow_sklearn():
    """An indicator matrix y: one logistic output per label, classes_ numbering the columns,
    predict an int indicator matrix (proba > 0.5), subset accuracy as the score, partial_fit
    taking the labels from y, and no stratified split for early stopping."""
    y = TARGETS["multilabel"][1]
    theirs = _quiet(sknn.MLPClassifier((8,), max_iter=20, random_state=0), X, y)
    ours = _quiet(fd.MLPClassifier((8,), max_iter=20, random_state=0), X, y)
    for attribute in ("classes_", "n_outputs_", "out_activation_"):
        np.testing.assert_array_equal(getattr(ours, attribute), getattr(theirs, attribute))
    prediction = ours.predict(X)
    assert prediction.dtype == theirs.predict(X).dtype and prediction.shape == y.shape
    np.testing.assert_array_equal(prediction, (ours.predict_proba(X) > 0.5).astype(int))
    assert ours.score(X, y) == pytest.approx(np.mean((prediction == y).all(axis=1)))
    assert ours.__sklearn_tags__().classifier_tags.multi_label
    stream = fd.MLPClassifier((8,), random_state=0).partial_fit(X[:50], y[:50], classes=[0, 1])
    stream.partial_fit(X[50:], y[50:])
    np.testing.assert_array_equal(stream.classes_, [0, 1, 2])
    with pytest.raises(ValueError, match="expected the kind of target of the first fit"):
        stream.partial_fit(X, LABELS)
    early = _quiet(fd.MLPClassifier((8,), early_stopping=True, max_iter=5, random_state=0), X, y)
    assert len(early.validation_scores_) == 5


def test_the_regressor_takes_sklearns_loss_parameter():
    assert fd.MLPRegressor().get_params()["loss"] == "squared_error"
    import inspect
    assert list(inspect.signature(fd.MLPRegressor).parameters)[:3] == \
        list(inspect.signature(sknn.MLPRegressor).parameters)[:3]  # loss first, positional, as scikit-learn
    with pytest.raises(ValueError, match="'poisson' is not implemented"):
        fd.MLPRegressor(loss="poisson").fit(X, X[:, 0])
    with pytest.raises(ValueError, match="first positional parameter, as in scikit-learn"):
        fd.MLPRegressor((8,)).fit(X, X[:, 0])
